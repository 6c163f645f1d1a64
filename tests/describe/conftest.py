"""Fixtures of the describe tests: one rendered store with prompts, and one short Model A head trained on it,
shared by every test file in this folder (building them takes most of the folder's time)."""

from __future__ import annotations

import shutil

import pytest

import clipstore
from clipstore.world import render_folder

MINI = "clipstore-mini"


@pytest.fixture(scope="session")
def world_store(tmp_path_factory):
    """A clipstore-mini store of 240 rendered images whose PNGs carry their prompts."""
    root = tmp_path_factory.mktemp("describe")
    render_folder(root / "world", 240, seed=11)
    render_folder(root / "heldout", 24, seed=11, split="heldout")
    store = clipstore.connect(root / "store", model=MINI)
    report = store.ingest(root / "world")
    assert report.prompts_found == 240 and not report.failed
    return store, root


@pytest.fixture(scope="session")
def trained(world_store):
    """The world store with one short head-only Model A trained on it, and its TrainReport."""
    store, _ = world_store
    report = store.train(epochs=20, freeze_vision=True, views=2, patience=4)
    return store, report


@pytest.fixture
def indexed_copy(trained, tmp_path):
    """(the trained world store, an exact copy of it whose prompt bank carries both vector indexes, built
    through a store index threshold forced down to 50 rows)."""
    from clipstore.db import tables, vector_index
    from clipstore.prompts.nearest import BANK_VECTOR_COLUMNS, update_bank_index

    store, _ = trained
    copy = clipstore.connect(shutil.copytree(store.path, tmp_path / "indexed.clipstore"))
    assert all(vector_index.vector_index(tables.open_prompts(copy.db), c) is None for c in BANK_VECTOR_COLUMNS)
    vector_index.set_index_threshold(copy.db, 50)
    assert update_bank_index(copy.db, tables.open_prompts(copy.db)) == {c: "built" for c in BANK_VECTOR_COLUMNS}
    return store, copy
