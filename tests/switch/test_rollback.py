"""Undoing switches (clipstore.switch.rollback) and the switch history (clipstore.switch.history): restored
vectors and files, switch/rollback sequences in any order, tags, stale heads — real stores, real clipstore-mini."""

from __future__ import annotations

from pathlib import Path

import pytest

import clipstore
from clipstore.db import layout
from clipstore.switch.history import history
from clipstore.switch.reembed import ReembedError
from clipstore.world import render_folder
from mini_model import DEFAULT_MINI

MINI = "clipstore-mini"
RANDOM = "clipstore-mini:random"


def test_rollback_restores_the_previous_model_vectors_and_files(world, world_image):
    store, root = world
    query = world_image
    before = store.search_image(query, k=5)
    store.reembed(RANDOM)
    render_folder(root / "later", 3, seed=99)
    assert store.ingest(root / "later").added == 3  # ingested after the switch, with the new model
    assert store.count_images() == 43

    report = store.rollback()
    assert report.model == DEFAULT_MINI and report.previous_model == RANDOM
    assert store.model.spec == DEFAULT_MINI and store.count_images() == 40
    assert store.search_image(query, k=5) == before
    assert store.ingest(root / "later").added == 3  # the files rows went back too: they are ingested again
    with pytest.raises(ReembedError, match=f"switch of this store \\(to {RANDOM}\\) was already rolled back: the store uses "
                       f"{DEFAULT_MINI}, its original model"):
        store.rollback()


def test_a_store_never_switched_says_so_on_rollback(world):
    store, _ = world
    with pytest.raises(ReembedError, match="never been switched"):
        store.rollback()


ROLLBACK = "rollback"
NOISY = "noisy checkpoint"  # stands for the noisy_checkpoint fixture's spec
SEQUENCES = {
    "B, rollback, B again": [RANDOM, ROLLBACK, RANDOM, ROLLBACK, RANDOM],
    "B, C, rollback twice, C": [RANDOM, NOISY, ROLLBACK, ROLLBACK, NOISY],
    "B, rollback, B, back to A": [RANDOM, ROLLBACK, RANDOM, DEFAULT_MINI],
    "B, C, back to B": [RANDOM, NOISY, RANDOM],
    "C, A, C, A": [NOISY, "clipstore-mini", NOISY, "clipstore-mini"],
}


@pytest.mark.slow
@pytest.mark.parametrize("steps", list(SEQUENCES.values()), ids=list(SEQUENCES))
def test_switches_and_rollbacks_in_any_order(world, world_image, noisy_checkpoint, steps):
    store, root = world
    query = world_image
    noisy = f"clipstore-mini:{noisy_checkpoint}"
    original = DEFAULT_MINI
    specs = {NOISY: noisy, "clipstore-mini": original}
    seen: dict[str, list] = {}
    _assert_uses(store, original, seen, query)
    models = [original]  # what each rollback returns to
    for step in [*steps] + [ROLLBACK] * (len(steps) + 1):
        if step == ROLLBACK and len(models) == 1:
            break
        if step == ROLLBACK:
            report = store.rollback()
            assert report.previous_model == models.pop() and report.model == models[-1]
        else:
            spec = specs.get(step, step)
            report = store.reembed(spec)
            assert report.switched and report.previous_model == models[-1]
            if spec in seen:  # its table is still there and nothing changed since: nothing to embed
                assert report.embedded == 0 and report.resumed == 40 and report.prompts_embedded == 0
            models.append(spec)
        _assert_uses(store, models[-1], seen, query)
        live = [entry["tag"] for entry in history(store.db)]
        assert live == [f"clipstore-switch-{n}" for n in range(1, len(models))]
        assert set(store.db.open_table(layout.FILES).tags.list()) == set(live)  # a rollback drops its tag
    with pytest.raises(ReembedError, match=f"already rolled back: the store uses {original}, its original model"):
        store.rollback()


def _assert_uses(store, spec: str, seen: dict, query: Path) -> None:
    """The store (and a fresh connection to it) uses `spec`, its vectors are that model's, and a text search
    gives what it gave the last time the store used `spec`."""
    for opened in (store, clipstore.connect(store.path)):
        assert opened.model.spec == spec and opened.info().model["spec"] == spec
    assert store.count_images() == 40
    assert store.search_image(query, k=1)[0].score == pytest.approx(1.0, abs=1e-3)  # made by this model
    hits = [(hit.path, round(hit.score, 4)) for hit in store.search_text("a red circle", k=5)]
    assert seen.setdefault(spec, hits) == hits


def test_a_rollback_after_switching_back_to_a_reused_table_keeps_files_and_images_in_step(world, noisy_checkpoint):
    store, root = world
    noisy = f"clipstore-mini:{noisy_checkpoint}"
    store.reembed(RANDOM)
    store.reembed(noisy)
    render_folder(root / "later", 3, seed=99)
    assert store.ingest(root / "later").added == 3  # into the noisy model's table
    assert store.reembed(RANDOM).embedded == 3  # the random model's table is reused: only the new images
    store.rollback()
    assert store.model.spec == noisy and store.count_images() == 43
    store.rollback()  # back to the random model's table as it was at the switch: without the later images
    assert store.model.spec == RANDOM and store.count_images() == store.count_files() == 40
    assert store.ingest(root / "later").added == 3


@pytest.mark.slow
def test_heads_go_stale_after_a_switch_and_describe_says_so(tmp_path):
    render_folder(tmp_path / "world", 60, seed=9)
    store = clipstore.connect(tmp_path / "h.clipstore", model=MINI)
    store.ingest(tmp_path / "world")
    store.train(epochs=1, freeze_vision=True, views=0)
    assert not store.heads()[0].stale
    store.reembed(RANDOM)
    assert store.heads()[0].stale
    image = sorted((tmp_path / "world").rglob("*.png"))[0]
    description = store.describe(image)
    assert description.method == "model_b"
    assert any(f"was trained on {DEFAULT_MINI}, not on the store's current encoder {RANDOM}; it is stale" in note
               for note in description.notes), description.notes
    assert description.head is None and description.parts["a"] is None  # the stale head is not used
    store.rollback()
    head = store.heads()[0]
    assert not head.stale
    description = store.describe(image)
    assert description.head == head.id and description.parts["a"] is not None  # the head is used again
    assert not any("stale" in note for note in description.notes), description.notes
