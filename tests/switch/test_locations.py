"""Stores that are moved or copied keep working (clipstore.switch.locations): fine-tuned models inside the store
move with it, checkpoints outside it are relinked once (issue #11 items 3 and 13) — real stores, real
clipstore-mini, real fine-tuning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import clipstore
from clipstore.cli import main
from clipstore.db import tables
from clipstore.encoders import clip
from clipstore.encoders.identity import ModelIdentity
from clipstore.finetune.registry import resolve_target
from clipstore.switch.history import history
from clipstore.switch.reembed import staging_names
from mini_model import DEFAULT_MINI

BASE = DEFAULT_MINI


@pytest.fixture
def no_towers(monkeypatch):
    """Searches embed their queries with the loaded model, not with the numpy towers an earlier load cached (which
    need no weights, so they would not show where the weights load from)."""
    monkeypatch.setattr("clipstore.encoders.tower_cache.cached_tower", lambda kind, identity: None)


@pytest.fixture
def fresh_encoders(monkeypatch, no_towers):
    """Weights load afresh (from where the store says they are) instead of from this process's cache."""
    monkeypatch.setattr(clip, "_cache", {})


def _searches(store) -> list:
    return [(hit.path, round(hit.score, 4)) for hit in store.search_text("a red circle", k=5)]


def _in_store_model(path: Path, model_id: str) -> str:
    return str(path / "models" / model_id / "model.safetensors")


@pytest.mark.slow
def test_a_switched_store_can_be_moved(switched, switched_copy, tmp_path, fresh_encoders):
    path, world, model_id, _ = switched
    before = switched_copy
    expected = _searches(clipstore.connect(before))
    moved = tmp_path / "elsewhere" / "moved.clipstore"
    moved.parent.mkdir()
    shutil.move(before, moved)

    store = clipstore.connect(moved)  # no --model needed
    assert store.model.checkpoint_path == _in_store_model(moved, model_id)
    assert store.info().model["spec"] == f"clipstore-mini:{_in_store_model(moved, model_id)}"
    assert _searches(store) == expected
    assert store.search_image(sorted(world.rglob("*.png"))[0], k=1)[0].score == pytest.approx(1.0, abs=1e-3)
    assert store.finetuned_models()[0]["parent"]["spec"] == BASE
    result = CliRunner().invoke(main, ["info", "--store", str(moved), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["model"]["spec"] == store.model.spec

    # What the store records does not name the old place: the table metadata and the switch history.
    recorded = tables.stored_model(tables.open_images(store.db))
    assert recorded.checkpoint_path == f"models/{model_id}/model.safetensors"
    assert ModelIdentity.from_json(history(store.db)[-1]["model"]).checkpoint_path == recorded.checkpoint_path

    # ... and the switch can be undone and made again there.
    assert store.rollback().model == BASE and store.model.spec == BASE
    again = store.reembed(model_id)
    assert again.embedded == 0 and again.resumed == 40 and _searches(store) == expected


@pytest.mark.slow
def test_a_copied_store_opens_beside_the_original(switched, switched_copy, tmp_path, fresh_encoders):
    path, _, model_id, _ = switched
    original = switched_copy
    copy = tmp_path / "copy.clipstore"
    shutil.copytree(original, copy)
    stores = [clipstore.connect(original), clipstore.connect(copy)]
    assert [s.model.checkpoint_path for s in stores] == [_in_store_model(original, model_id), _in_store_model(copy, model_id)]
    expected = _searches(stores[0])
    assert _searches(stores[1]) == expected
    shutil.rmtree(original)  # the copy does not lean on the original
    clip._cache.clear()
    assert _searches(clipstore.connect(copy)) == expected


@pytest.mark.slow
def test_a_store_that_recorded_absolute_in_store_paths_still_opens_after_a_move(switched, switched_copy, tmp_path, monkeypatch, fresh_encoders):
    """Stores written before in-store paths were relative hold the absolute path of models/<id>/...: after a
    move the same file under the store is used when its SHA-256 matches."""
    path, _, model_id, _ = switched
    old = switched_copy
    store = clipstore.connect(old)
    store.rollback()
    identity, _ = resolve_target(store.context, model_id)
    store.db.drop_table(staging_names(identity)["images"])
    with monkeypatch.context() as patch:
        patch.setattr(ModelIdentity, "portable", lambda self, root: self)  # the old code recorded paths as they were
        store.reembed(model_id)
    assert tables.stored_model(tables.open_images(store.db)).checkpoint_path == _in_store_model(old, model_id)
    expected = _searches(store)
    moved = tmp_path / "moved.clipstore"
    shutil.move(old, moved)
    reopened = clipstore.connect(moved)
    assert reopened.model.checkpoint_path == _in_store_model(moved, model_id)
    assert _searches(reopened) == expected


# --- checkpoints outside the store --------------------------------------------------------------------------


@pytest.fixture
def outside(noisy_checkpoint, tmp_path, photo_folder, no_towers):
    """A store made with a checkpoint file outside it: (store path, checkpoint path, text search results)."""
    checkpoint = tmp_path / "weights" / "model.safetensors"
    checkpoint.parent.mkdir()
    shutil.copyfile(noisy_checkpoint, checkpoint)
    store = clipstore.connect(tmp_path / "s.clipstore", model=f"clipstore-mini:{checkpoint}")
    store.ingest(photo_folder)
    return Path(store.path), checkpoint, _searches(store)


def test_a_moved_outside_checkpoint_is_relinked_once(outside, tmp_path, fresh_encoders):
    path, checkpoint, expected = outside
    moved = tmp_path / "archive" / "renamed.safetensors"
    moved.parent.mkdir()
    shutil.move(checkpoint, moved)
    store = clipstore.connect(path)  # opening needs no weights
    with pytest.raises(clipstore.ModelUnavailableError, match="clipstore model relink"):
        store.search_text("a red circle")

    runner = CliRunner()
    result = runner.invoke(main, ["model", "relink", str(moved), "--store", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["path"] == str(moved) and report["previous_path"] == str(checkpoint)
    assert report["model"] == f"clipstore-mini:{moved}"

    reopened = clipstore.connect(path)  # no --model: the store remembers
    assert reopened.model.checkpoint_path == str(moved)
    assert _searches(reopened) == expected
    result = runner.invoke(main, ["search", "a red circle", "--store", str(path), "-k", "5", "--json"])
    assert result.exit_code == 0 and [h["path"] for h in json.loads(result.output)["hits"]] == [p for p, _ in expected]


def test_relinking_a_file_with_other_weights_is_refused(outside, tmp_path):
    path, checkpoint, _ = outside
    other = tmp_path / "other.safetensors"
    other.write_bytes(checkpoint.read_bytes()[:-8] + b"\0" * 8)
    store = clipstore.connect(path)
    with pytest.raises(clipstore.ModelMismatchError, match="not a checkpoint this store's vectors were made with"):
        store.relink_model(other)
    result = CliRunner().invoke(main, ["model", "relink", str(other), "--store", str(path)])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "Traceback" not in result.output
    assert clipstore.connect(path).model.checkpoint_path == str(checkpoint)  # nothing was remembered


def test_relinking_a_store_on_published_weights_says_there_is_nothing_to_relink(store, photo_folder, noisy_checkpoint):
    store.ingest(photo_folder)
    with pytest.raises(clipstore.ModelSpecError, match="nothing to relink"):
        store.relink_model(noisy_checkpoint)


@pytest.mark.slow
def test_heads_trained_on_a_fine_tuned_model_move_with_the_store(switched, switched_copy, tmp_path, fresh_encoders):
    path, world, model_id, _ = switched
    before = switched_copy
    store = clipstore.connect(before)
    head = store.train(epochs=1, freeze_vision=True, views=0)
    recorded = json.loads((Path(head.folder) / "config.json").read_text())["base_model"]["checkpoint_path"]
    assert recorded == f"models/{model_id}/model.safetensors"
    moved = tmp_path / "moved.clipstore"
    shutil.move(before, moved)
    reopened = clipstore.connect(moved)
    (info,) = reopened.heads()
    assert not info.stale and info.base_model["spec"] == reopened.model.spec == f"clipstore-mini:{_in_store_model(moved, model_id)}"
    assert reopened.describe(sorted(world.rglob("*.png"))[0]).head == head.head_id
