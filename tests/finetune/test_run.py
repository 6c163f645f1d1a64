"""Fine-tuning runs (clipstore.finetune.run) on real stores with the real clipstore-mini model: MCIP and 2SFT,
saving, resuming, `--apply`, and the CLI round trip through reembed and rollback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import clipstore
from clipstore.cli import main
from clipstore.db import layout, tables
from mini_model import DEFAULT_MINI

MINI = "clipstore-mini"
BASE = DEFAULT_MINI


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


@pytest.mark.slow
def test_finetune_apply_says_the_store_switched_and_how_to_undo(switched):
    path, _, model_id, output = switched
    assert f"The store now uses clipstore-mini:{path / 'models' / model_id / 'model.safetensors'} (switched from {BASE})" in output
    assert f"Undo with: clipstore rollback (back to {BASE})" in output
    assert "clipstore reembed" not in output  # already switched: no advice to switch


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
    assert result.exit_code == 0 and json.loads(result.output)["model"] == DEFAULT_MINI
    result = runner.invoke(main, ["rollback", "--store", store.path])
    assert result.exit_code == 1 and "was already rolled back" in result.output and "nothing to roll back" in result.output
    result = runner.invoke(main, ["reembed", "--store", store.path, "--model", DEFAULT_MINI])
    assert result.exit_code == 1 and "already" in result.output


@pytest.mark.slow
def test_a_finetune_that_does_not_improve_says_so_and_is_not_applied_unless_forced(world):
    store, _ = world
    # Learning rates of 0 leave the model exactly as it was: validation cannot improve.
    frozen = dict(epochs=1, batch_size=16, augment=False, labels_from_folders=True, lr_backbone=0.0, lr_head=0.0, lr_probe=False)
    report = store.finetune(apply=True, **frozen)
    assert report.improved is False and report.switch is None
    assert report.validation_after == pytest.approx(report.validation_before, abs=1e-6)
    note = next(n for n in report.notes if n.startswith("Validation did not improve"))
    assert f"{report.validation_before:.4f} before" in note and "--force" in note and "learning rate" in note
    assert any(n.startswith(f"Not applied: the store keeps {DEFAULT_MINI}") for n in report.notes)
    assert store.model.spec == BASE and not store.model.checkpoint_path
    assert report.to_dict()["improved"] is False

    runner = CliRunner()
    listed = json.loads(runner.invoke(main, ["finetune", "--store", store.path, "--list", "--json"]).output)["models"]
    assert [m["id"] for m in listed] == [report.model_id]
    assert listed[0]["improved"] is False and listed[0]["before"] == pytest.approx(report.validation_before)
    text = runner.invoke(main, ["finetune", "--store", store.path, "--list"]).output
    assert report.model_id in text and "NOT improved" in text and "mAP@10" in text

    forced = store.finetune(apply=True, force=True, **frozen)
    assert forced.improved is False and forced.switch is not None and forced.switch.switched
    assert clipstore.connect(store.path).model.checkpoint_path.endswith(f"{forced.model_id}/model.safetensors")


@pytest.mark.slow
def test_the_learning_rate_probe_tries_three_scales_and_trains_with_the_best(world):
    store, _ = world
    report = store.finetune(epochs=1, batch_size=16, labels_from_folders=True, augment=False)
    assert [scale for scale, _ in report.lr_probe] == [1.0, 10.0, 100.0]
    assert dict(report.lr_probe)[report.lr_scale] == max(score for _, score in report.lr_probe)
    note = next(n for n in report.notes if n.startswith("Learning-rate probe"))
    assert f"trained with {report.lr_scale:g}x" in note and "--no-lr-probe" in note
    assert report.to_dict()["lr_scale"] == report.lr_scale
    plain = store.finetune(epochs=1, batch_size=16, labels_from_folders=True, augment=False, lr_probe=False)
    assert plain.lr_probe == () and plain.lr_scale == 1.0
    assert not any(n.startswith("Learning-rate probe") for n in plain.notes)


def test_the_probe_keeps_the_best_finite_score_and_the_smaller_scale_on_a_tie():
    from clipstore.finetune.run import _best_scale

    assert _best_scale(((1.0, 0.2), (10.0, 0.3), (100.0, 0.25))) == 10.0
    assert _best_scale(((1.0, 0.3), (10.0, 0.3), (100.0, float("nan")))) == 1.0
    assert _best_scale(((1.0, float("nan")), (10.0, float("nan")))) == 1.0
