"""clipstore.describe.train: `store.train` / `clipstore train` fits Model A, tunes Model B and alpha, saves the head."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import clipstore
from clipstore.cli import main
from clipstore.describe.pairs import load_pairs
from clipstore.describe.train import TrainOptions

MINI = "clipstore-mini"


def test_short_head_training_lowers_validation_loss_and_beats_zero_shot(trained):
    _, report = trained
    first, best = report.history[0], max(report.history, key=lambda h: h.validation_avg_cos)
    assert math.isnan(first.train_loss)  # epoch 0 is the untrained head
    assert best.validation_loss < first.validation_loss - 0.3
    assert report.validation["model_a"] > report.validation["zero_shot"]
    assert report.validation["ensemble"] >= max(report.validation["model_a"], report.validation["model_b"]) - 1e-6
    assert 0.0 <= report.ensemble_alpha <= 1.0 and report.knn["k"] >= 1
    assert report.filtered_out > 0  # the render world's paraphrases are near-duplicates at 0.85
    assert not report.vision_tuned and os.path.isfile(os.path.join(report.folder, "model_a.safetensors"))
    config = json.loads(Path(report.folder, "config.json").read_text())
    assert config["base_model"]["architecture"] == MINI and config["hyper_parameters"]["lr_fc"] == 1e-3


@pytest.mark.slow
def test_tuned_tower_training_with_differential_learning_rates(world_store):
    store, _ = world_store
    report = store.train(epochs=2, lr_vision=1e-4, batch_size=64, patience=5)
    assert report.vision_tuned
    assert report.history[-1].validation_loss < report.history[0].validation_loss - 0.2
    description = store.describe(load_pairs(store.db).paths[0], head=report.head_id)
    assert description.head == report.head_id and description.parts["a"] is not None


@pytest.mark.slow
def test_training_resumes_from_its_last_checkpoint(world_store):
    store, _ = world_store

    class Stop(Exception):
        pass

    def stop_in_epoch_three(stage, done, total):
        if stage == "train" and done > 2 * total // 4:
            raise Stop

    options = TrainOptions(epochs=4, freeze_vision=True, augment=False, patience=10, seed=3)
    with pytest.raises(Stop):
        store.train(options, progress=stop_in_epoch_three)
    report = store.train(options)
    assert report.resumed_from_epoch == 2 and report.epochs_run == 4
    assert [h.epoch for h in report.history] == [0, 1, 2, 3, 4]


def test_cli_train_on_a_store_without_prompts_is_one_clear_error(tmp_path, photo_folder):
    store = clipstore.connect(tmp_path / "np.clipstore", model=MINI)
    store.ingest(photo_folder)
    result = CliRunner().invoke(main, ["train", "--store", store.path, "--freeze-vision"])
    assert result.exit_code == 1 and "at least 10 images that carry a prompt" in result.output
