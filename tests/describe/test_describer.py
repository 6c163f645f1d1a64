"""clipstore.describe.describer: `store.describe` / `clipstore describe` with Model B, Model A and their ensemble."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import clipstore
from clipstore.cli import main
from clipstore.describe.ensemble import blend
from clipstore.describe.pairs import load_pairs
from clipstore.prompts.bank import prompt_id
from clipstore.world import render_folder

MINI = "clipstore-mini"


@pytest.mark.slow
def test_describe_finds_the_exact_prompt_of_stored_images(trained, tmp_path):
    store, _ = trained
    small = tmp_path / "small"
    render_folder(small, 30, seed=4)
    second = clipstore.connect(tmp_path / "small.clipstore", model=MINI)
    second.ingest(small)
    bank = {p.id for p in second.list_prompts(limit=1000)}
    checked = 0
    for record in map(json.loads, (small / "manifest.jsonl").read_text().splitlines()):
        if prompt_id(record["prompt"]) in bank:
            description = second.describe(small / record["path"])
            assert description.prompts[0].text == record["prompt"]
            assert description.method == "model_b" and description.alpha == 0.0
            checked += 1
    assert checked >= 15


def test_describe_uses_the_ensemble_and_reports_its_parts(trained):
    store, report = trained
    path = load_pairs(store.db).paths[5]
    description = store.describe(path, top=3)
    assert description.method == "ensemble" and description.head == store.heads()[0].id
    assert description.embedding.shape == (384,) and abs(np.linalg.norm(description.embedding) - 1) < 1e-5
    a, b = description.parts["a"], description.parts["b"]
    expected = blend(a, b, description.alpha)
    assert description.embedding == pytest.approx(expected, abs=1e-5)
    assert len(description.prompts) == 3 and description.prompts[0].score >= description.prompts[1].score
    only_b = store.describe(path, alpha=0.0)
    assert only_b.embedding == pytest.approx(b, abs=1e-5) and only_b.method == "model_b"
    with_images = store.describe(path, use_images=True, k=5)
    assert with_images.knn.k == 5 and with_images.parts["b"] is not None


def test_without_a_head_describe_uses_model_b_and_says_so(tmp_path, photo_folder):
    store = clipstore.connect(tmp_path / "b.clipstore", model=MINI)
    store.ingest(photo_folder)
    with pytest.raises(clipstore.NothingToDescribeWithError, match="prompts add"):
        store.describe(next(photo_folder.rglob("*.png")))
    store.add_prompts(["a photo of stripes", "a checkered pattern", "a plain grey square"])
    description = store.describe(next(photo_folder.rglob("*.png")))
    assert description.method == "model_b" and description.head is None
    assert any("Model B alone" in note for note in description.notes)
    assert len(description.prompts) == 3


@pytest.mark.slow
def test_cli_train_describe_eval(trained, world_store, tmp_path):
    store, _ = trained
    _, root = world_store
    runner = CliRunner()
    base = ["--store", store.path]
    result = runner.invoke(main, ["train", *base, "--freeze-vision", "--epochs", "2", "--views", "1", "--json"])
    assert result.exit_code == 0, result.output
    trained_id = json.loads(result.output)["head_id"]
    result = runner.invoke(main, ["heads", *base, "--json"])
    assert json.loads(result.output)["heads"][0]["id"] == trained_id

    image = str(next((root / "heldout").rglob("*.png")))
    result = runner.invoke(main, ["describe", image, *base, "-k", "7", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"prompts", "alpha", "embedding"} <= set(data) and len(data["embedding"]) == 384
    assert data["knn"]["k"] == 7 and {"text", "score"} <= set(data["prompts"][0])

    out = tmp_path / "descriptions.jsonl"
    (root / "heldout" / "broken.png").write_bytes(b"not a png")
    try:
        result = runner.invoke(main, ["describe", str(root / "heldout"), *base, "--out", str(out), "--json"])
    finally:
        (root / "heldout" / "broken.png").unlink()
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"described": 24, "failed": 1, "out": str(out)}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum("error" in line for line in lines) == 1 and all("path" in line for line in lines)

    result = runner.invoke(main, ["describe", str(root / "heldout"), *base])
    assert result.exit_code != 0 and "--out" in result.output

    result = runner.invoke(main, ["eval", *base, "--pairs", str(root / "heldout" / "manifest.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert all({"name", "avg_cos", "n"} <= set(row) for row in rows) and rows[-1]["name"].startswith("Ensemble")

    result = runner.invoke(main, ["describe", image, *base, "--head", "nope"])
    assert result.exit_code == 1 and "No Model A head" in result.output and "Traceback" not in result.output


def test_describe_with_an_indexed_bank_agrees_with_the_unindexed_store(indexed_copy):
    store, copy = indexed_copy
    head = store.heads()[0].id  # named, with an alpha inside (0, 1): the ensemble, whatever the head scored
    for path in load_pairs(store.db).paths[:8]:
        exact, indexed = store.describe(path, top=5, head=head, alpha=0.5), copy.describe(path, top=5, head=head, alpha=0.5)
        assert [hit.id for hit in indexed.prompts] == [hit.id for hit in exact.prompts]
        assert [hit.score for hit in indexed.prompts] == pytest.approx([hit.score for hit in exact.prompts], abs=1e-5)
        assert indexed.embedding == pytest.approx(exact.embedding, abs=1e-5)
        assert indexed.method == exact.method == "ensemble"
