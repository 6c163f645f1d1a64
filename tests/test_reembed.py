"""Fine-tuning building blocks and the safe model switch: staged re-embed, crash + resume, atomic switch,
rollback, stale heads — on real LanceDB stores with the real clipstore-mini model."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import clipstore
from clipstore.encoders.identity import resolve_model
from clipstore.db import tables
from clipstore.cli import main
from clipstore.finetune.run import arc_margin_logits, caption_recall, info_nce_loss, map_at_k, mc_arc_margin_loss
from clipstore.switch.reembed import ReembedError, history, staging_names
from clipstore.finetune.retrieval import knn_accuracy, text_to_image
from clipstore.world import render_folder
from clipstore.db import layout

MINI = "clipstore-mini"
RANDOM = "clipstore-mini:random"


# --- losses and metrics by hand -------------------------------------------------------------------------------


def test_arc_margin_adds_the_angle_to_the_target_only():
    cosines = torch.tensor([[0.5, 0.2, -0.1]])
    logits = arc_margin_logits(cosines, torch.tensor([0]), scale=10.0, margin=0.3)
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(math.acos(0.5) + 0.3), abs=1e-5)
    assert logits[0, 1:].tolist() == pytest.approx([2.0, -1.0])


def test_multi_caption_loss_leaves_the_other_captions_out_of_the_softmax():
    embeddings = torch.tensor([[1.0, 0.0]])
    centres = torch.tensor([[1.0, 0.0], [0.9, math.sqrt(1 - 0.81)], [0.0, 1.0]])
    both = mc_arc_margin_loss(embeddings, centres, torch.tensor([[0, 1]]), scale=10.0, margin=0.0)
    # Each positive competes only with the negative (index 2): CE over [s*cos(pos), s*cos(neg)].
    expected = np.mean([math.log(1 + math.exp(10 * (0.0 - c)))  for c in (1.0, 0.9)])
    assert both.item() == pytest.approx(expected, rel=1e-4)
    padded = mc_arc_margin_loss(embeddings, centres, torch.tensor([[0, -1]]), scale=10.0, margin=0.0)
    assert padded.item() == pytest.approx(math.log(math.exp(10) + math.exp(9) + 1) - 10, rel=1e-4)


def test_info_nce_is_small_for_matching_pairs():
    images = torch.eye(3)
    assert info_nce_loss(images, images, 100.0).item() < 1e-6
    assert info_nce_loss(images, images.flip(0), 100.0).item() > 10


def test_retrieval_metrics_by_hand():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert map_at_k(vectors, ["a", "a", "b", "b"], k=3) == (pytest.approx(1.0), pytest.approx(1.0))
    mean_ap, r1 = map_at_k(vectors, ["a", "b", "a", "b"], k=3)
    assert r1 == 0.0 and mean_ap == pytest.approx((1 / 3 + 1 / 2 + 1 / 3 + 1 / 2) / 4)  # ranks 3, 2, 3, 2
    assert text_to_image(vectors, vectors[[2, 0]], np.array([2, 0])) == (1.0, 1.0)
    assert knn_accuracy(vectors[:1], ["a"], vectors[1:], ["a", "b", "b"], k=1) == 1.0
    assert caption_recall(vectors[:2], vectors[2:], np.array([[0, -1], [1, -1]])) == 0.5


# --- the safe switch --------------------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path):
    render_folder(tmp_path / "world", 40, seed=8)
    store = clipstore.connect(tmp_path / "s.clipstore", model=MINI)
    store.ingest(tmp_path / "world")
    return store, tmp_path


def _any_image(root: Path) -> Path:
    return sorted(root.rglob("*.png"))[0]


def test_a_crash_midway_keeps_the_old_vectors_and_a_rerun_resumes(world):
    store, root = world
    query = _any_image(root / "world")
    before = store.search_image(query, k=5)
    text_before = store.search_text("a red circle", k=3)

    class Crash(Exception):
        pass

    seen_midway = []

    def crash(stage, done, total):
        if stage == "re-embed images" and done == 20:  # mid-run: another reader still gets the old vectors
            reader = clipstore.connect(store.path)
            seen_midway.append((reader.model.spec, reader.search_image(query, k=5) == before))
        if stage == "re-embed images" and done == 25:
            raise Crash

    with pytest.raises(Crash):
        store.reembed(RANDOM, batch_size=8, progress=crash)
    assert seen_midway == [("clipstore-mini:world-v1", True)]
    assert store.model.spec == "clipstore-mini:world-v1"
    assert store.search_image(query, k=5) == before and store.search_text("a red circle", k=3) == text_before
    assert clipstore.connect(store.path).model.spec == "clipstore-mini:world-v1"
    staged = store.db.open_table(staging_names(resolve_model(RANDOM))["images"]).count_rows()
    assert staged == 24  # three whole batches of 8 were committed before the crash

    report = store.reembed(RANDOM, batch_size=8)
    assert report.switched and report.resumed == 24 and report.embedded == 16 and report.images == 40
    assert report.prompts_embedded == store.count_prompts() > 0  # another text encoder: the bank follows
    assert store.model.spec == RANDOM and clipstore.connect(store.path).model.spec == RANDOM
    assert store.search_image(query, k=1)[0].score == pytest.approx(1.0, abs=1e-3)
    assert store.count_images() == 40


def test_rollback_restores_the_previous_model_vectors_and_files(world):
    store, root = world
    query = _any_image(root / "world")
    before = store.search_image(query, k=5)
    store.reembed(RANDOM)
    render_folder(root / "later", 3, seed=99)
    assert store.ingest(root / "later").added == 3  # ingested after the switch, with the new model
    assert store.count_images() == 43

    report = store.rollback()
    assert report.model == "clipstore-mini:world-v1" and report.previous_model == RANDOM
    assert store.model.spec == "clipstore-mini:world-v1" and store.count_images() == 40
    assert store.search_image(query, k=5) == before
    assert store.ingest(root / "later").added == 3  # the files rows went back too: they are ingested again
    with pytest.raises(ReembedError, match=f"switch of this store \\(to {RANDOM}\\) was already rolled back: the store uses "
                       "clipstore-mini:world-v1, its original model"):
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
    "B, rollback, B, back to A": [RANDOM, ROLLBACK, RANDOM, "clipstore-mini:world-v1"],
    "B, C, back to B": [RANDOM, NOISY, RANDOM],
    "C, A, C, A": [NOISY, "clipstore-mini", NOISY, "clipstore-mini"],
}


@pytest.mark.slow
@pytest.mark.parametrize("steps", list(SEQUENCES.values()), ids=list(SEQUENCES))
def test_switches_and_rollbacks_in_any_order(world, noisy_checkpoint, steps):
    store, root = world
    query = _any_image(root / "world")
    noisy = f"clipstore-mini:{noisy_checkpoint}"
    original = "clipstore-mini:world-v1"
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


def test_switching_again_to_a_checkpoint_that_moved_reuses_its_vectors(world, noisy_checkpoint, tmp_path, monkeypatch):
    """Issue #11 item 4: the table left by the first switch recorded the checkpoint's old path, and re-creating
    it with the new one failed with "Schema Error: Provided schema does not match existing table schema"."""
    from clipstore.encoders import clip

    store, root = world
    first = tmp_path / "first" / "model.safetensors"
    first.parent.mkdir()
    shutil.copyfile(noisy_checkpoint, first)
    store.reembed(f"clipstore-mini:{first}")
    before = store.search_text("a red circle", k=5)
    store.rollback()
    moved = tmp_path / "moved.safetensors"
    shutil.move(first, moved)
    report = store.reembed(f"clipstore-mini:{moved}")
    assert report.embedded == 0 and report.resumed == 40
    monkeypatch.setattr(clip, "_cache", {})  # load the weights afresh, from where the store says they are
    reopened = clipstore.connect(store.path)
    assert reopened.model.checkpoint_path == str(moved)
    assert reopened.search_text("a red circle", k=5) == before


def test_columns_added_to_the_images_table_are_carried_into_a_switch(world):
    """A later migration may add a column (as 0005 added `prompt_offered`; here a new `reviewed`) to the current
    images table only: a switch, a switch back to a table made before the column existed, and a rollback keep
    the column and its values."""
    store, _ = world
    images = tables.open_images(store.db)
    ids = sorted(tables.read_columns(images, ["id"]).column("id").to_pylist())
    images.add_columns({"reviewed": "prompt IS NOT NULL"})
    images.update(where=f"id = '{ids[0]}'", values={"reviewed": False})

    def offered() -> dict:
        rows = tables.read_columns(tables.open_images(store.db), ["id", "reviewed"]).to_pylist()
        return {row["id"]: row["reviewed"] for row in rows}

    expected = {image_id: image_id != ids[0] for image_id in ids}
    assert offered() == expected
    store.reembed(RANDOM)
    assert offered() == expected
    store.rollback()
    store.db.open_table(layout.IMAGES).update(where=f"id = '{ids[1]}'", values={"reviewed": False})
    store.reembed(RANDOM)  # reuses the table of the first switch: the changed value comes along
    assert offered() == {**expected, ids[1]: False}
    tables.open_images(store.db).update(where=f"id = '{ids[2]}'", values={"reviewed": False})
    tables.open_images(store.db).add_columns({"added_later": "width + 1"})
    store.rollback()
    assert tables.active_tables(store.db)["images"] == layout.IMAGES and offered() == {**expected, ids[1]: False}
    rows = tables.read_columns(tables.open_images(store.db), ["width", "added_later"]).to_pylist()
    assert [row["added_later"] for row in rows] == [row["width"] + 1 for row in rows]


def test_missing_files_stop_the_switch_unless_dropped(world):
    store, root = world
    victim = _any_image(root / "world")
    moved = root / "moved.png"
    shutil.move(victim, moved)
    with pytest.raises(ReembedError, match="--drop-missing"):
        store.reembed(RANDOM)
    assert store.model.spec == "clipstore-mini:world-v1"
    report = store.reembed(RANDOM, drop_missing=True)
    assert len(report.dropped) == 1 and report.dropped[0].path == str(victim) and store.count_images() == 39
    shutil.move(moved, victim)  # the file comes back: the next ingest embeds it with the new model
    assert store.ingest(root / "world").added == 1 and store.count_images() == 40


@pytest.mark.slow
def test_heads_go_stale_after_a_switch_and_describe_says_so(tmp_path):
    render_folder(tmp_path / "world", 60, seed=9)
    store = clipstore.connect(tmp_path / "h.clipstore", model=MINI)
    store.ingest(tmp_path / "world")
    store.train(epochs=1, freeze_vision=True, views=0)
    assert not store.heads()[0].stale
    store.reembed(RANDOM)
    assert store.heads()[0].stale
    description = store.describe(_any_image(tmp_path / "world"))
    assert description.method == "model_b"
    assert any(f"was trained on clipstore-mini:world-v1, not on the store's current encoder {RANDOM}; it is stale" in note
               for note in description.notes), description.notes
    assert description.head is None and description.parts["a"] is None  # the stale head is not used
    store.rollback()
    head = store.heads()[0]
    assert not head.stale
    description = store.describe(_any_image(tmp_path / "world"))
    assert description.head == head.id and description.parts["a"] is not None  # the head is used again
    assert not any("stale" in note for note in description.notes), description.notes


@pytest.mark.slow
def test_mcip_finetune_saves_a_model_that_reembeds_without_touching_the_bank(world):
    store, root = world
    bank_before = tables.read_columns(tables.open_prompts(store.db), ["id", "clip_embedding"]).to_pylist()
    report = store.finetune(epochs=1, batch_size=16, labels_from_folders=True)
    assert report.method == "mcip" and report.classes >= 2 and report.captions_per_image >= 1
    assert not report.text_encoder_changed and os.path.isfile(os.path.join(report.folder, "model.safetensors"))
    config = json.loads(Path(report.folder, "config.json").read_text())
    assert config["parent"]["architecture"] == MINI and config["method"] == "mcip"
    assert store.finetuned_models()[0]["id"] == report.model_id

    switched = store.reembed(report.model_id)
    assert switched.prompts_embedded == 0  # locked text encoder: the bank's CLIP embeddings stay valid
    assert tables.active_tables(store.db)["prompts"] == layout.PROMPTS
    assert tables.read_columns(tables.open_prompts(store.db), ["id", "clip_embedding"]).to_pylist() == bank_before
    assert store.model.checkpoint_path == os.path.join(report.folder, "model.safetensors")
    assert store.search_text("a red circle", k=1)


@pytest.mark.slow
def test_2sft_needs_labels_and_realigns_the_text_encoder(world):
    store, _ = world
    with pytest.raises(clipstore.TrainingDataError, match="labels"):
        store.finetune(method="2sft", epochs=1)
    report = store.finetune(method="2sft", epochs=1, realign_epochs=1, batch_size=16, labels_from_folders=True)
    assert report.text_encoder_changed and any(h.stage.startswith("text") for h in report.history)
    switched = store.reembed(report.model_id)
    assert switched.prompts_embedded == store.count_prompts()


@pytest.mark.slow
def test_cli_finetune_reembed_rollback_and_retrieval_eval(world):
    store, root = world
    runner = CliRunner()
    result = runner.invoke(main, ["finetune", "--store", store.path, "--epochs", "1", "--batch-size", "16", "--labels-from-folders", "--json"])
    assert result.exit_code == 0, result.output
    model_id = json.loads(result.output)["model_id"]
    result = runner.invoke(main, ["eval", "--store", store.path, "--retrieval", "--labels-from-folders", "--template", "a {label}", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert len(rows) == 2 and {"image_map", "image_r1", "text_r1", "text_r10", "zero_shot_accuracy", "knn_accuracy"} <= set(rows[0])
    result = runner.invoke(main, ["reembed", "--store", store.path, "--model", model_id, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["switched"] is True
    result = runner.invoke(main, ["rollback", "--store", store.path, "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["model"] == "clipstore-mini:world-v1"
    result = runner.invoke(main, ["rollback", "--store", store.path])
    assert result.exit_code == 1 and "was already rolled back" in result.output and "nothing to roll back" in result.output
    result = runner.invoke(main, ["reembed", "--store", store.path, "--model", "clipstore-mini:world-v1"])
    assert result.exit_code == 1 and "already" in result.output


@pytest.mark.slow
def test_a_short_mcip_run_improves_image_to_image_and_keeps_text_to_image(tmp_path):
    """Seed 003's claim in miniature: labels = the rendered object colour (a structured attribute)."""
    world_dir = tmp_path / "world"
    render_folder(world_dir, 240, seed=31)
    store = clipstore.connect(tmp_path / "m.clipstore", model=MINI)
    store.ingest(world_dir)
    labels = {"label_manifest": str(world_dir / "manifest.jsonl"), "label_field": "labels.colour"}
    report = store.finetune(epochs=4, lr_backbone=1e-4, lr_head=1e-3, batch_size=32, **labels)
    assert report.classes >= 8 and report.validation_after > report.validation_before
    result = store.evaluate_retrieval(models=[report.model_id], template="a {label} object", splits=("validation", "test"), **labels)
    base, tuned = result.rows
    assert result.images >= 30
    assert tuned.image_map > base.image_map + 0.05
    assert tuned.knn_accuracy >= base.knn_accuracy
    assert tuned.text_r10 >= base.text_r10 - 0.05


@pytest.mark.slow
def test_an_interrupted_finetune_resumes_from_its_last_epoch(world):
    store, _ = world

    class Stop(Exception):
        pass

    def stop_in_epoch_two(stage, done, total):
        if stage == "finetune" and done > total // 2:
            raise Stop

    options = dict(epochs=2, batch_size=16, labels_from_folders=True, augment=False, patience=5)
    with pytest.raises(Stop):
        store.finetune(progress=stop_in_epoch_two, **options)
    assert store.finetuned_models() == []  # nothing half-saved
    report = store.finetune(**options)
    assert [h.epoch for h in report.history] == [0, 1, 2]


@pytest.mark.slow
def test_mcip_without_labels_learns_from_captions_alone(world):
    store, _ = world
    report = store.finetune(epochs=2, batch_size=16, augment=False, patience=5)
    assert report.classes == 0 and report.validation_metric.startswith("minus the fine-tuning loss")
    assert report.validation_after > report.validation_before  # the validation loss went down
