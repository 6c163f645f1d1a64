"""describe: Model B (eq. 4-5), Model A training, the ensemble (eq. 6), eval, and the CLI — on real parts:
a real LanceDB store, the bundled clipstore-mini CLIP model, real all-MiniLM-L6-v2, rendered images."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import clipstore
from clipstore.training.augment import mentions_sides, shuffle_words, text_variants
from clipstore.cli import main
from clipstore.describe.model_b import KnnParams, bank_neighbours, fuse, knn_weights, matrix_neighbours, predict
from clipstore.describe.pairs import load_pairs, split_for
from clipstore.prompts.bank import prompt_id
from clipstore.describe.train import TrainOptions, blend
from clipstore.world import render_folder

MINI = "clipstore-mini"


# --- eq. 4, 5, 6 against hand-computed values ----------------------------------------------------------------


def test_eq4_weights_by_hand():
    params = KnnParams(k=2, distance_dim=2.0, delta=0.0, coef=1.0)
    assert knn_weights(np.array([0.5, 1.0, 2.0]), params) == pytest.approx([4.0, 1.0, 0.25])
    with_delta = KnnParams(k=2, distance_dim=2.0, delta=0.5, coef=3.0)
    assert knn_weights(np.array([0.5]), with_delta)[0] == pytest.approx(3.0 / 0.5**2.5)  # = 16.9706
    assert knn_weights(np.array([0.0]), params)[0] == pytest.approx(1e12)  # clamped, finite


def test_eq5_fusion_by_hand():
    params = KnnParams(k=2, distance_dim=2.0, delta=0.0, coef=1.0)
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0]])
    fused = fuse(np.array([0.5, 1.0]), embeddings, params)
    assert fused == pytest.approx([2.0, 0.5])  # (4 * e1 + 1 * e2) / K
    assert predict(np.array([0.5, 1.0]), embeddings, params) == pytest.approx(np.array([4.0, 1.0]) / math.sqrt(17))
    batched = predict(np.array([[0.5, 1.0], [1.0, 0.5]]), np.stack([embeddings, embeddings]), params)
    assert batched[1] == pytest.approx(np.array([1.0, 4.0]) / math.sqrt(17))
    # Distance_Dim = 0: every neighbour weighs the same (a plain mean).
    assert predict(np.array([0.3, 1.7]), embeddings, KnnParams(k=2, distance_dim=0.0, delta=0.0)) == pytest.approx([0.5**0.5] * 2)
    # Large exponents overflow eq. 4 in float64, but the prediction's direction stays exact.
    far = predict(np.array([1e-3, 2e-3]), embeddings, KnnParams(k=2, distance_dim=400.0, delta=0.0))
    assert np.all(np.isfinite(far)) and far[0] == pytest.approx(1.0)


def test_eq6_blend_by_hand():
    a = np.array([1.0, 0.0])
    b = np.array([0.0, 1.0])
    assert blend(a, b, 0.75) == pytest.approx(np.array([0.75, 0.25]) / math.hypot(0.75, 0.25))
    assert blend(a, b, 1.0) == pytest.approx(a)
    assert blend(a, b, 0.0) == pytest.approx(b)


def test_matrix_neighbours_exact_and_masked():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(50, 8))
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    queries = keys[:3] + 0.01
    indices, distances = matrix_neighbours(queries, keys, 5)
    assert list(indices[:, 0]) == [0, 1, 2]
    assert np.all(np.diff(distances, axis=1) >= 0)
    hidden = np.zeros(50, bool)
    hidden[[0, 1, 2]] = True
    indices, _ = matrix_neighbours(queries, keys, 5, hidden)
    assert not set(indices.ravel()) & {0, 1, 2}


# --- augmentations ------------------------------------------------------------------------------------------


def test_text_augmentations_keep_meaningful_structure():
    rng = random.Random(0)
    prompt = "a small red circle, on a striped background, detailed drawing"
    shuffled = shuffle_words(prompt, rng)
    assert shuffled.startswith("a small red circle") and sorted(shuffled.split(", ")) == sorted(prompt.split(", "))
    variants = text_variants(prompt, 8, rng)
    assert len(variants) == 8 and any(v != prompt for v in variants)
    assert mentions_sides("a star on the left") and mentions_sides("Right side") and not mentions_sides("bright star")


# --- a rendered store with prompts ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world_store(tmp_path_factory):
    """A clipstore-mini store of 240 rendered images whose PNGs carry their prompts."""
    root = tmp_path_factory.mktemp("describe")
    render_folder(root / "world", 240, seed=11)
    render_folder(root / "heldout", 24, seed=11, split="heldout")
    store = clipstore.connect(root / "store", model=MINI)
    report = store.ingest(root / "world")
    assert report.prompts_found == 240 and not report.failed
    return store, root


@pytest.fixture(scope="module")
def trained(world_store):
    store, _ = world_store
    report = store.train(epochs=20, freeze_vision=True, views=2, patience=4)
    return store, report


def test_pairs_split_is_stable_and_covers_the_store(world_store):
    store, _ = world_store
    pairs = load_pairs(store.db)
    assert len(pairs) == 240
    assert set(pairs.splits) == {"train", "validation", "test"}
    assert pairs.splits == tuple(split_for(i, p) for i, p in zip(pairs.ids, pairs.prompts))
    assert split_for("any-id", "same prompt") == split_for("other-id", "same prompt")
    assert all(path and os.path.isfile(path) for path in pairs.paths)


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


def test_model_b_retrieves_through_lancedb_like_the_exact_matrix(trained):
    store, _ = trained
    pairs = load_pairs(store.db)
    from clipstore.describe.train import bank_view

    bank = bank_view(store, [])
    for row in range(5):
        found = bank_neighbours(store.db, pairs.embeddings[row], 10)
        indices, distances = matrix_neighbours(pairs.embeddings[row][None], bank.clip, 10)
        assert list(found.ids) == [bank.ids[i] for i in indices[0]]
        assert found.distances == pytest.approx(distances[0], abs=1e-5)


def test_a_head_from_another_base_model_is_refused(trained, tmp_path, photo_folder):
    store, _ = trained
    other = clipstore.connect(tmp_path / "other.clipstore", model="clipstore-mini:random")
    other.ingest(photo_folder)
    other.add_prompts(["a red circle", "a blue square"])
    with pytest.raises(clipstore.ModelMismatchError, match="retrain"):
        other.describe(next(photo_folder.rglob("*.png")), head=store.heads()[0].folder)
    with pytest.raises(clipstore.HeadNotFoundError):
        store.describe(next(photo_folder.rglob("*.png")), head="no-such-head")


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
def test_eval_table_hides_the_answers_and_has_every_row(trained, world_store):
    store, report = trained
    result = store.evaluate(ablation=(None, 0.85))
    names = [row.name for row in result.rows]
    assert names[0].startswith("CLIP zero-shot")
    assert any(n.startswith("Model A, no data filter") for n in names) and any(n.startswith("Model A, filter 0.85") for n in names)
    assert "Model A" in names and any(n.startswith("Model B") for n in names) and any(n.startswith("Ensemble") for n in names)
    assert all(0.0 < row.avg_cos < 0.99 for row in result.rows)  # no method found the hidden answer itself
    assert len({row.n for row in result.rows}) == 1 and result.head == store.heads()[0].id
    _, root = world_store
    given = store.evaluate(pairs=root / "heldout" / "manifest.jsonl", ablation=())
    assert given.pairs == "given pairs" and given.rows[0].n == 24


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


def test_cli_train_on_a_store_without_prompts_is_one_clear_error(tmp_path, photo_folder):
    store = clipstore.connect(tmp_path / "np.clipstore", model=MINI)
    store.ingest(photo_folder)
    result = CliRunner().invoke(main, ["train", "--store", store.path, "--freeze-vision"])
    assert result.exit_code == 1 and "at least 10 images that carry a prompt" in result.output
