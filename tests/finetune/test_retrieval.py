"""`clipstore eval --retrieval` (clipstore.finetune.retrieval) on real stores: a short fine-tune improves
image->image retrieval, and after a switch the fine-tuned model is compared with its base."""

from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner

import clipstore
from clipstore.cli import main
from clipstore.world import render_folder
from mini_model import DEFAULT_MINI

MINI = "clipstore-mini"
BASE = DEFAULT_MINI


@pytest.mark.slow
def test_a_short_mcip_run_improves_image_to_image_and_keeps_text_to_image(tmp_path):
    """Seed 003's claim in miniature: labels = the rendered object colour (a structured attribute)."""
    world_dir = tmp_path / "world"
    render_folder(world_dir, 240, seed=31)
    store = clipstore.connect(tmp_path / "m.clipstore", model=MINI)
    store.ingest(world_dir)
    labels = {"label_manifest": str(world_dir / "manifest.jsonl"), "label_field": "labels.colour"}
    report = store.finetune(epochs=4, lr_backbone=1e-4, lr_head=1e-3, batch_size=32, lr_probe=False, **labels)
    assert report.classes >= 8 and report.validation_after > report.validation_before
    result = store.evaluate_retrieval(models=[report.model_id], template="a {label} object", splits=("validation", "test"), **labels)
    base, tuned = result.rows
    assert result.images >= 30
    assert tuned.image_map > base.image_map + 0.05
    assert tuned.knn_accuracy >= base.knn_accuracy
    assert tuned.text_r10 >= base.text_r10 - 0.05


@pytest.mark.slow
def test_retrieval_eval_after_a_switch_compares_the_fine_tuned_model_with_its_base(switched, switched_copy):
    path, _, model_id, _ = switched
    store = clipstore.connect(switched_copy)
    options = dict(labels_from_folders=True, splits=("validation", "test"))
    tuned, base = store.evaluate_retrieval(**options).rows
    assert tuned.model == f"fine-tuned {model_id} (store)" and base.model == f"{BASE} (base of {model_id})"
    output = CliRunner().invoke(main, ["eval", "--store", store.path, "--retrieval", "--labels-from-folders", "-q"]).output
    assert f"\n{BASE} (base of {model_id}) " in output  # the whole name, however long

    store.rollback()  # the base row scores what the store scores on its base model
    assert store.evaluate_retrieval(models=[], **options).rows == (replace(base, model=f"{BASE} (store)"),)
