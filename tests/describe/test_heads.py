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
