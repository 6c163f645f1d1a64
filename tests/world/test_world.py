"""The render world: deterministic, draws what the prompt says, paraphrases, held-out combinations."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from clipstore.world import COLOURS, SHAPES, Scene, describe, generate, is_heldout_combination, render_folder, render_scene, sample_scene
from clipstore.world.grammar import BACKGROUNDS
from clipstore.world.samples import read_manifest


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.png"))}


def test_same_seed_gives_byte_identical_pngs_and_other_seeds_differ(tmp_path):
    render_folder(tmp_path / "a", 12, seed=7)
    render_folder(tmp_path / "b", 12, seed=7)
    render_folder(tmp_path / "c", 12, seed=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert (tmp_path / "a" / "manifest.jsonl").read_bytes() == (tmp_path / "b" / "manifest.jsonl").read_bytes()
    assert set(_digest(tmp_path / "a").values()).isdisjoint(_digest(tmp_path / "c").values())


def test_manifest_and_png_text_chunk_carry_the_prompt(tmp_path):
    manifest = render_folder(tmp_path / "w", 6, seed=1, size=96)
    records = read_manifest(manifest.manifest)
    assert len(records) == 6 == manifest.count
    for record in records:
        image = Image.open(record["path"])
        assert image.size == (96, 96)
        parameters = image.text["parameters"]
        assert parameters.splitlines()[0] == record["prompt"]
        assert "Negative prompt:" in parameters and "Seed:" in parameters
        assert record["labels"]["shape"] in record["path"]  # files are grouped in one folder per shape
    raw = [json.loads(line) for line in (tmp_path / "w" / "manifest.jsonl").read_text().splitlines()]
    assert not raw[0]["path"].startswith("/")  # relative to the manifest, so the folder can move


def test_prompts_state_the_labels():
    for sample in generate(60, seed=3):
        labels, prompt = sample.labels, sample.prompt
        assert labels["colour"] in prompt
        assert labels["shape"] in prompt  # plural forms start with the singular
        assert labels["background"] in prompt
        if labels["count"] > 1:
            assert {2: "two", 3: "three", 4: "four"}[labels["count"]] in prompt
        if labels["pattern"] not in ("plain",):
            assert any(word in prompt for word in ("striped", "checker", "dot", "gradient", "fading"))


def test_splits_separate_shape_colour_combinations():
    heldout_pairs = {(s, c) for s in SHAPES for c in COLOURS if is_heldout_combination(s, c)}
    assert 0.1 < len(heldout_pairs) / (len(SHAPES) * len(COLOURS)) < 0.2
    assert {s for s, _ in heldout_pairs} == set(SHAPES)  # every shape is seen in training with other colours
    train = {(x.labels["shape"], x.labels["colour"]) for x in generate(300, seed=0, split="train", size=32)}
    held = {(x.labels["shape"], x.labels["colour"]) for x in generate(100, seed=0, split="heldout", size=32)}
    assert train.isdisjoint(heldout_pairs)
    assert held <= heldout_pairs


def test_many_distinct_prompts_and_paraphrases_of_one_scene():
    prompts = [x.prompt for x in generate(300, seed=0, size=32)]
    assert len(set(prompts)) == 300
    scene = sample_scene(random.Random(5))
    paraphrases = {describe(scene, random.Random(i)) for i in range(40)}
    assert len(paraphrases) >= 10


def test_paraphrases_are_near_duplicates_for_minilm():
    from clipstore.encoders.minilm import load_minilm_encoder

    scene = Scene("star", "red", "large", 1, "center", "white", "plain", "filled", "solid")
    other = Scene("circle", "blue", "small", 3, "scattered", "black", "striped", "outline", "solid")
    texts = [describe(scene, random.Random(i)) for i in range(6)] + [describe(other, random.Random(0))]
    vectors = load_minilm_encoder().encode(texts)
    same = vectors[:6] @ vectors[:6].T
    assert np.median(same[np.triu_indices(6, 1)]) >= 0.85  # the 0.85 dedup threshold would merge most of them
    assert float(vectors[0] @ vectors[6]) < 0.85


@pytest.mark.parametrize("colour", ["red", "blue", "yellow", "green"])
def test_renderer_draws_the_object_in_its_colour_where_the_prompt_says(colour):
    scene = Scene("square", colour, "large", 1, "top left", "white", "plain", "filled", "solid")
    image = np.asarray(render_scene(scene, 128, random.Random(0)), dtype=np.int32)
    expected = np.asarray(COLOURS[colour])
    quadrant = image[:64, :64].reshape(-1, 3)
    opposite = image[64:, 64:].reshape(-1, 3)
    close = lambda pixels, rgb: np.mean(np.abs(pixels - rgb).sum(axis=1) < 40)  # noqa: E731
    assert close(quadrant, expected) > 0.25
    assert close(opposite, expected) < 0.02
    assert close(opposite, np.asarray(BACKGROUNDS["white"])) > 0.9




def test_object_counts_are_visible():
    for count in (1, 2, 3, 4):
        scene = Scene("circle", "black", "small", count, "center" if count == 1 else "scattered", "white", "plain", "filled", "solid")
        image = np.asarray(render_scene(scene, 128, random.Random(count)).convert("L")) < 100
        assert _components(image) == count


def _components(mask: np.ndarray) -> int:
    """Number of 4-connected True regions (small flood fill; the images are 128x128)."""
    seen = np.zeros_like(mask, dtype=bool)
    regions = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        regions += 1
        stack = [(y, x)]
        while stack:
            cy, cx = stack.pop()
            if 0 <= cy < mask.shape[0] and 0 <= cx < mask.shape[1] and mask[cy, cx] and not seen[cy, cx]:
                seen[cy, cx] = True
                stack.extend(((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)))
    return regions


def test_attribute_coverage():
    labels = [x.labels for x in generate(400, seed=11, size=32)]
    for key in ("shape", "size", "count", "pattern", "style", "background"):
        assert len(Counter(label[key] for label in labels)) >= 3, key
