"""Fragments written by workers and committed at once by a driver: keys already present or written twice are left
out (their fragments written again without them), the commit is one version, and orphans are removed."""

from __future__ import annotations

import os
from datetime import timedelta

import lance
import lancedb
import pyarrow as pa
import pytest

from clipstore.db import fragments

SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("value", pa.int64())])


@pytest.fixture
def table(tmp_path):
    db = lancedb.connect(tmp_path / "db", read_consistency_interval=timedelta(0))
    table = db.create_table("t", schema=SCHEMA)
    table.add(pa.table({"id": ["a"], "value": [0]}, schema=SCHEMA))
    return table


def _rows(ids, value):
    return pa.table({"id": ids, "value": [value] * len(ids)}, schema=SCHEMA)


def _data_files(table) -> set[str]:
    return set(os.listdir(os.path.join(table.uri, "data")))


def test_one_commit_appends_every_worker_s_rows_leaving_out_present_and_repeated_keys(table):
    first = fragments.write_fragments(table.uri, _rows(["a", "b", "c"], 1))  # "a" is in the table already
    second = fragments.write_fragments(table.uri, _rows(["c", "d"], 2))  # "c" written by both workers
    version = table.version
    assert table.count_rows() == 1  # written, not committed: no reader sees them

    keep_second_c = lambda key, fragment: not (key == "c" and fragment == 0)
    result = fragments.commit_append(table.uri, first + second, key="id", keep=keep_second_c)

    assert (result.rows, result.left_out, result.rewritten) == (3, 2, 1)
    assert table.version == version + 1  # one commit
    assert sorted(table.to_arrow().to_pylist(), key=lambda r: r["id"]) == [
        {"id": "a", "value": 0}, {"id": "b", "value": 1}, {"id": "c", "value": 2}, {"id": "d", "value": 2}
    ]
    assert fragments.remove_orphans(table.to_lance())[0] == 1  # the first fragment's old file, rewritten without a, c
    assert fragments.remove_orphans(table.to_lance())[0] == 0


def test_nothing_left_to_append_commits_nothing(table):
    written = fragments.write_fragments(table.uri, _rows(["a"], 5))
    version = table.version
    assert fragments.commit_append(table.uri, written, key="id").rows == 0
    assert table.version == version


def test_orphans_go_and_every_version_stays(table):
    table.add(_rows(["b"], 1))
    committed = _data_files(table)
    fragments.write_fragments(table.uri, _rows(["x", "y"], 9))
    assert len(_data_files(table)) == len(committed) + 1
    versions = [v["version"] for v in table.to_lance().versions()]

    files, size = fragments.remove_orphans(table.to_lance())
    assert files == 1 and size > 0
    assert _data_files(table) == committed
    assert [v["version"] for v in table.to_lance().versions()] == versions
    assert lance.dataset(table.uri, version=versions[1]).count_rows() == 1  # an old version still reads
    assert sorted(r["id"] for r in table.to_arrow().to_pylist()) == ["a", "b"]


def test_the_interrupted_mark_is_cleared_by_cleaning(store):
    from clipstore.db import layout, tables

    images = tables.open_images(store.db)
    fragments.begin_uncommitted(store.db, images.name)
    fragments.write_fragments(images.uri, images.to_arrow())  # what a killed run leaves (an empty fragment list here)
    assert fragments.interrupted_table(store.db) == layout.IMAGES
    assert fragments.clean_interrupted(store.db) == (0, 0)
    assert fragments.interrupted_table(store.db) is None
