"""clipstore.describe.heads: choosing a saved head, and refusing one trained on another encoder."""

from __future__ import annotations

import json

import pytest

import clipstore


def test_a_head_from_another_base_model_is_refused(trained, tmp_path, photo_folder):
    store, _ = trained
    other = clipstore.connect(tmp_path / "other.clipstore", model="clipstore-mini:random")
    other.ingest(photo_folder)
    other.add_prompts(["a red circle", "a blue square"])
    with pytest.raises(clipstore.ModelMismatchError, match="retrain"):
        other.describe(next(photo_folder.rglob("*.png")), head=store.heads()[0].folder)
    with pytest.raises(clipstore.HeadNotFoundError):
        store.describe(next(photo_folder.rglob("*.png")), head="no-such-head")


def test_heads_show_the_validation_result_beside_zero_shot(trained):
    from click.testing import CliRunner

    from clipstore.cli import main

    store, report = trained
    info = next(head for head in store.heads() if head.id == report.head_id)  # other tests may train more heads
    assert info.validation_ensemble == pytest.approx(report.validation["ensemble"], abs=1e-6)
    assert info.validation_zero_shot == pytest.approx(report.validation["zero_shot"], abs=1e-6)
    assert info.beats_zero_shot == (report.validation["ensemble"] > report.validation["zero_shot"])
    heads = json.loads(CliRunner().invoke(main, ["heads", "--store", store.path, "--json"]).output)["heads"]
    data = next(head for head in heads if head["id"] == report.head_id)
    assert data["beats_zero_shot"] == info.beats_zero_shot and data["validation_zero_shot"] == pytest.approx(info.validation_zero_shot)
    text = CliRunner().invoke(main, ["heads", "--store", store.path]).output
    line = next(line for line in text.splitlines() if line.startswith(report.head_id))
    assert f"zero-shot {info.validation_zero_shot:.4f}" in line
    assert ("NOT better than zero-shot" in line) == (not info.beats_zero_shot)


def test_a_head_that_did_not_beat_zero_shot_is_not_used_unless_asked(trained, tmp_path):
    """describe is never knowingly worse than zero-shot: a newest head whose validation ensemble scored at or
    below the zero-shot nearest prompt is skipped (K = 1, the nearest prompt), and used only when named."""
    import shutil
    from pathlib import Path

    import numpy as np

    store, report = trained
    copy = clipstore.connect(shutil.copytree(store.path, tmp_path / "copy.clipstore"))
    newest = copy.heads()[0]
    image = next((Path(store.path).parent / "world").rglob("*.png"))
    config_path = Path(newest.folder) / "config.json"
    assert Path(store.path) not in config_path.parents  # the shared fixture's own head is untouched
    config = json.loads(config_path.read_text())

    def record_validation(ensemble: float) -> None:  # what the head's training recorded, whatever this one scored
        config["validation"]["ensemble"] = ensemble
        config["ensemble_alpha"] = 0.5  # (a head that wins blends; this one's own alpha depends on the base model)
        config_path.write_text(json.dumps(config))

    record_validation(config["validation"]["zero_shot"] + 0.01)  # as a head that won would record
    copy = clipstore.connect(copy.path)
    assert copy.describe(image).method == "ensemble" and copy.describe(image).knn_choice.rule == "head"

    record_validation(config["validation"]["zero_shot"] - 0.01)  # as a head that lost would record

    copy = clipstore.connect(copy.path)  # (a store reuses its describer until a table changes)
    fallback = copy.describe(image)
    assert fallback.method == "model_b" and fallback.head is None and fallback.knn.k == 1
    assert fallback.knn_choice.rule == "head-below-zero-shot"
    assert fallback.knn_choice.nearest_avg_cos == pytest.approx(config["validation"]["zero_shot"])
    assert any(f"head {newest.id}" in note and "zero-shot" in note for note in fallback.notes)
    # the answer is the zero-shot one: the bank prompt whose CLIP text embedding is nearest the image's
    from clipstore.db import tables

    bank = tables.open_prompts(copy.db).to_arrow()
    clip_vectors = np.stack(bank.column("clip_embedding").to_numpy(zero_copy_only=False))
    nearest = bank.column("text")[int(np.argmax(clip_vectors @ copy.embed_image(image)))].as_py()
    assert fallback.text == nearest
    named = copy.describe(image, head=newest.id)
    assert named.head == newest.id and named.method == "ensemble"
