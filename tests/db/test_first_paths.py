"""Each image row's `first_path` (migration 0006) stays the first of its stored paths through every write, is
never a path that holds other bytes even when a write is killed halfway, and lets an indexed search answer in
one query."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lancedb
import pytest

from clipstore.db import first_paths, layout, tables
from image_factory import pattern_image, write_image


def first_path_of(store) -> dict[str, str | None]:
    images = tables.open_images(store.db)
    return {row["id"]: row[layout.FIRST_PATH] for row in tables.read_columns(images, ["id", layout.FIRST_PATH]).to_pylist()}


def assert_consistent(store) -> None:
    images = tables.open_images(store.db)
    assert first_paths.check(store.db, images) == {}
    stored = tables.paths_by_image(store.db)
    assert first_path_of(store) == {image_id: paths[0] for image_id, paths in stored.items()}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i in range(4):
        write_image(root / f"m{i}.png", pattern_image(i))
    return root


def test_ingest_records_the_first_path_of_every_image_including_duplicates(store, folder):
    shutil.copy(folder / "m1.png", folder / "a-copy-of-m1.png")  # sorts first: the image's first path changes
    store.ingest(folder)
    assert_consistent(store)
    ids = first_path_of(store)
    assert str(folder / "a-copy-of-m1.png") in ids.values() and str(folder / "m1.png") not in ids.values()

    # A later ingest links a duplicate that sorts first to an image stored by an earlier run.
    shutil.copy(folder / "m2.png", folder / "0-first.png")
    store.ingest(folder)
    assert_consistent(store)
    assert str(folder / "0-first.png") in first_path_of(store).values()


def test_changed_content_and_pruned_files_move_the_first_path(store, folder):
    shutil.copy(folder / "m0.png", folder / "z-copy-of-m0.png")
    store.ingest(folder)
    write_image(folder / "m0.png", pattern_image(40))  # the first path of m0's image now holds other bytes
    store.ingest(folder)
    assert_consistent(store)
    assert str(folder / "z-copy-of-m0.png") in first_path_of(store).values()

    os.remove(folder / "z-copy-of-m0.png")
    os.remove(folder / "m3.png")
    store.ingest(folder, prune=True)
    assert_consistent(store)
    assert len(first_path_of(store)) == 3  # m0 (new bytes), m1, m2; the old m0 image and m3 are gone


def test_a_write_killed_before_the_file_rows_never_leaves_a_path_that_holds_other_bytes(store, folder, monkeypatch):
    shutil.copy(folder / "m0.png", folder / "z-copy-of-m0.png")
    store.ingest(folder)
    old_id = next(i for i, p in first_path_of(store).items() if p == str(folder / "m0.png"))
    write_image(folder / "m0.png", pattern_image(40))

    original = lancedb.table.LanceTable.merge_insert

    def killed(self, on):
        if self.name == layout.FILES:
            raise KeyboardInterrupt("killed before the file rows")
        return original(self, on)

    monkeypatch.setattr(lancedb.table.LanceTable, "merge_insert", killed)
    with pytest.raises(KeyboardInterrupt):
        store.ingest(folder)
    monkeypatch.undo()
    # files still says m0.png holds the old bytes, but the image row already names the path that keeps them.
    assert first_path_of(store)[old_id] == str(folder / "z-copy-of-m0.png")
    assert all(p is None or os.path.exists(p) for p in first_path_of(store).values())

    store.ingest(folder)
    assert_consistent(store)


def test_indexed_search_reads_paths_from_the_image_rows(store, folder, monkeypatch):
    store.ingest(folder)
    store.build_index()
    expected = [(h.id, h.path, round(h.score, 5)) for h in store.search_text("a pattern", k=3, exact=True)]

    def refuse(*args, **kwargs):
        raise AssertionError("an indexed search without a prefix read the files table")

    monkeypatch.setattr(tables, "paths_by_image", refuse)
    hits = store.search_text("a pattern", k=3)
    assert [(h.id, h.path, round(h.score, 5)) for h in hits] == expected


def test_rows_without_a_first_path_are_looked_up_and_a_rebuild_fills_them(store, folder):
    store.ingest(folder)
    store.build_index()
    images = tables.open_images(store.db)
    images.update(where="true", values={layout.FIRST_PATH: None})  # rows as written before migration 0006
    exact = [(h.id, h.path) for h in store.search_text("a pattern", k=4, exact=True)]
    assert [(h.id, h.path) for h in store.search_text("a pattern", k=4)] == exact

    report = store.build_index(rebuild=True)
    assert report.paths_filled == 4
    assert_consistent(store)
    assert [(h.id, h.path) for h in store.search_text("a pattern", k=4)] == exact
