"""A store written by an earlier clipstore opens unchanged: same vectors, same answers, migrated forward.

`tests/data/store-0.1/` was written by clipstore 0.1.0 before the package reshaping (commit 72e6b2b, migrations
0001-0004): 12 render-world images ingested with clipstore-mini, their PNG prompts and two more in the bank.
`store-0.1.expected.json` holds what that clipstore answered for a text search and a prompt search.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import clipstore
from clipstore.db import layout, tables

DATA = Path(__file__).resolve().parents[1] / "data"
EXPECTED = json.loads((DATA / "store-0.1.expected.json").read_text())


@pytest.fixture
def old_store(tmp_path) -> Path:
    path = tmp_path / "old.clipstore"
    shutil.copytree(DATA / "store-0.1", path)  # opening migrates it: never touch the checked-in copy
    return path


def test_an_old_store_opens_migrated_with_the_same_answers(old_store):
    store = clipstore.connect(old_store)
    assert all(status.applied for status in store.migrations())
    info = store.info()
    assert (info.images, info.files, info.prompts) == (EXPECTED["images"], EXPECTED["files"], EXPECTED["prompts"])
    assert store.model.spec == EXPECTED["model_spec"]

    search = EXPECTED["search"]
    hits = store.search_text(search["text"], k=search["k"])
    assert [(hit.id, hit.path) for hit in hits] == [(hit["id"], hit["path"]) for hit in search["hits"]]
    # The fixture's query was embedded in bf16 (this CPU has it); search queries are now embedded in float32 by
    # the numpy text tower, which agrees with bf16 at cosine >= 0.999: scores move in the third decimal.
    assert [hit.score for hit in hits] == pytest.approx([hit["score"] for hit in search["hits"]], abs=5e-3)

    prompt_search = EXPECTED["prompt_search"]
    found = store.search_prompts(prompt_search["text"], k=prompt_search["k"])
    assert [(hit.id, hit.text) for hit in found] == [(hit["id"], hit["text"]) for hit in prompt_search["hits"]]
    assert [hit.score for hit in found] == pytest.approx([hit["score"] for hit in prompt_search["hits"]], abs=1e-5)


def test_an_old_store_keeps_its_tables_and_gains_only_the_new_columns(old_store):
    before = {name: set(tables.read_columns(clipstore_table(old_store, name), ["id"]).column("id").to_pylist()) for name in ("images", "prompts")}
    clipstore.connect(old_store)
    after = {name: set(tables.read_columns(clipstore_table(old_store, name), ["id"]).column("id").to_pylist()) for name in ("images", "prompts")}
    assert after == before
    images = clipstore_table(old_store, layout.IMAGES)
    new = {layout.PROMPT_OFFERED, layout.FIRST_PATH}  # migrations 0005 and 0006, nothing else
    assert new <= set(images.schema.names)
    assert set(images.schema.names) - new == {"id", "width", "height", "format", "embedding", "added_at", "prompt", "prompt_source"}
    assert images.to_arrow().column(layout.FIRST_PATH).null_count == images.count_rows()  # filled by a rebuild


def clipstore_table(store_path: Path, name: str):
    import lancedb

    return lancedb.connect(store_path).open_table(name)
