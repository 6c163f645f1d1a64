"""Fixtures of the describe tests: one rendered store with prompts, and one short Model A head trained on it,
shared by every test file in this folder (building them takes most of the folder's time)."""

from __future__ import annotations

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
