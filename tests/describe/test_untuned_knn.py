"""Issue #16 item 1: without a trained head, default describe is never below the zero-shot nearest prompt.

Zero-shot is the bank prompt nearest the image in CLIP space (Model B with K = 1). The banks and images here
come from `tests/outside_world.py` (PIL drawings, not the render world) as well as from the render world.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import clipstore
from outside_world import COLOURS, SHAPES, plain_prompt, render_drawings

MINI = "clipstore-mini"
PLAIN_BANK = [plain_prompt(c, s) for c in COLOURS for s in SHAPES]
# Other ways a user writes the same thing, and unrelated prompts: a bank far larger and denser than the plain one.
EXTRA_TEMPLATES = ("a drawing of a {c} {s}", "a simple {c} {s} icon", "clip art of a {c} {s}", "a {c} {s} shape, flat colour")
UNRELATED = [f"a photograph of a {thing} at {time}" for thing in ("mountain", "city street", "beach", "forest", "cat",
             "dog", "car", "bridge", "lake", "market") for time in ("dawn", "noon", "dusk", "night")]


@pytest.fixture(scope="module")
def eval_drawings(tmp_path_factory):
    """64 drawings (every colour x shape once) that no store below has seen."""
    return render_drawings(tmp_path_factory.mktemp("eval") / "drawings", 64, seed=101, sidecar=False)


def scores(store, drawings, k=None) -> tuple[float, float]:
    """(Avg-Cos against MiniLM(true prompt), top-1 share) of store.describe over the drawings."""
    truths = [d.prompt for d in drawings]
    targets = store.minilm.encode(truths)
    cosines, hits = [], []
    for drawing, target in zip(drawings, targets):
        found = store.describe(drawing.path, k=k, top=1)
        cosines.append(float(found.embedding @ target / np.linalg.norm(target)))
        hits.append(found.text == drawing.prompt)
    return float(np.mean(cosines)), float(np.mean(hits))


def assert_not_below_zero_shot(store, drawings):
    default, zero_shot = scores(store, drawings), scores(store, drawings, k=1)
    assert default[0] >= zero_shot[0] - 1e-6, (default, zero_shot)
    assert default[1] >= zero_shot[1], (default, zero_shot)
    return default, zero_shot


@pytest.mark.slow
def test_plain_bank_without_images_uses_the_nearest_prompt_and_beats_the_old_default(tmp_path, eval_drawings):
    store = clipstore.connect(tmp_path / "plain.clipstore", model=MINI)
    store.add_prompts(PLAIN_BANK)
    description = store.describe(eval_drawings[0].path)
    assert description.knn.k == 1 and description.knn_choice.rule == "nearest-prompt"
    assert "no stored image-prompt pairs" in description.knn_choice.why
    default, zero_shot = assert_not_below_zero_shot(store, eval_drawings)
    # The gap: the old default, K = 20 over a 64-prompt bank, blurs every drawing towards the bank's mean
    # and names fewer of them (its Avg-Cos is higher: the bank's mean is never far from any plain prompt).
    old = scores(store, eval_drawings, k=20)
    assert old[1] < zero_shot[1], (old, zero_shot)


@pytest.mark.slow
def test_large_dense_bank_without_images(tmp_path, eval_drawings):
    from clipstore.world import generate

    store = clipstore.connect(tmp_path / "large.clipstore", model=MINI)
    extra = [t.format(c=c, s=s) for t in EXTRA_TEMPLATES for c in COLOURS for s in SHAPES]
    store.add_prompts(PLAIN_BANK + extra + UNRELATED + [sample.prompt for sample in generate(400, seed=5)])
    assert store.count_prompts() > 400
    assert_not_below_zero_shot(store, eval_drawings)


@pytest.mark.slow
def test_store_with_labelled_drawings_tunes_on_its_own_pairs(tmp_path, eval_drawings):
    store = clipstore.connect(tmp_path / "pairs.clipstore", model=MINI)
    render_drawings(tmp_path / "train", 128, seed=7)
    store.ingest(tmp_path / "train")
    description = store.describe(eval_drawings[0].path)
    choice = description.knn_choice
    assert choice.rule == "store-pairs" and choice.pairs == 128
    # The chosen parameters are never below K = 1 on the pairs they were chosen on.
    assert choice.avg_cos >= choice.nearest_avg_cos and choice.top1 >= choice.nearest_top1
    assert description.knn.k == 1 or choice.avg_cos > choice.nearest_avg_cos
    assert_not_below_zero_shot(store, eval_drawings)
    # `clipstore eval` without a head scores Model B with the same rule, tuned on the pairs it does not evaluate.
    report = store.evaluate()
    assert any(note.startswith("Model B K = ") and "image-prompt pairs" in note for note in report.notes), report.notes
    assert any(row.name.startswith("Model B") for row in report.rows)


def test_describe_json_says_which_parameters_and_why(tmp_path, eval_drawings):
    from clipstore.cli import main

    store = clipstore.connect(tmp_path / "json.clipstore", model=MINI)
    store.add_prompts(PLAIN_BANK[:12])
    base = ["--store", str(store.path)]
    data = json.loads(CliRunner().invoke(main, ["describe", str(eval_drawings[0].path), *base, "--json"]).output)
    assert data["knn"]["k"] == 1 and data["knn_choice"]["rule"] == "nearest-prompt" and "K = 1" in data["knn_choice"]["why"]
    data = json.loads(CliRunner().invoke(main, ["describe", str(eval_drawings[0].path), *base, "-k", "5", "--json"]).output)
    assert data["knn"]["k"] == 5 and data["knn_choice"]["rule"] == "option"


def test_a_large_bank_without_a_head_keeps_the_defaults_and_is_not_read_whole(tmp_path, eval_drawings, monkeypatch):
    from clipstore.describe import describer, model_b

    store = clipstore.connect(tmp_path / "large.clipstore", model=MINI)
    store.add_prompts(PLAIN_BANK[:12])
    monkeypatch.setattr(describer, "UNTUNED_MAX_BANK", 10)  # a "large" bank: more than 10 prompts (some of the 12 may be near-duplicates)

    def refuse(*args, **kwargs):
        raise AssertionError("the whole bank was read to tune Model B")

    monkeypatch.setattr(describer, "bank_view", refuse)
    found = store.describe(eval_drawings[0].path)
    assert found.knn_choice.rule == "defaults" and found.knn == model_b.KnnParams()
    assert "prompts (more than 10)" in found.knn_choice.why
