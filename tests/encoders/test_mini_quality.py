"""The bundled clipstore-mini weights know the render world: text finds the right image, images their prompts."""

from __future__ import annotations

import random

import numpy as np
import pytest

import clipstore
from clipstore.encoders.clip import load_clip_encoder
from clipstore.encoders.identity import MINI_WEIGHTS, MINI_WEIGHTS_SHA256, MINI_WEIGHTS_TAG, bundled_mini_weights, file_sha256, resolve_model
from clipstore.world import Scene, generate, render_scene


def test_bundled_weights_are_small_and_match_their_recorded_hash():
    path = bundled_mini_weights()
    assert path.stat().st_size <= 25 * 1024 * 1024
    assert file_sha256(path) == MINI_WEIGHTS_SHA256
    for tag, (name, sha256) in MINI_WEIGHTS.items():  # every tag ships its file, and `clipstore-mini:TAG` names it
        assert bundled_mini_weights(tag).name == name and file_sha256(bundled_mini_weights(tag)) == sha256
        identity = resolve_model(f"clipstore-mini:{tag}")
        assert (identity.pretrained, identity.checkpoint_sha256) == (tag, sha256)
    assert resolve_model("clipstore-mini").pretrained == MINI_WEIGHTS_TAG


def test_damaged_bundled_weights_are_refused(monkeypatch, tmp_path):
    from clipstore.encoders.clip import ClipEncoder

    damaged = tmp_path / "clipstore-mini.safetensors"
    damaged.write_bytes(bundled_mini_weights().read_bytes()[:-4] + b"oops")
    monkeypatch.setattr("clipstore.encoders.clip.bundled_mini_weights", lambda tag: damaged)
    with pytest.raises(clipstore.ModelUnavailableError, match="missing or damaged"):
        ClipEncoder(resolve_model("clipstore-mini"), device="cpu")


SCENES = {
    "a large red circle in the center on a plain white background": Scene("circle", "red", "large", 1, "center", "white", "plain", "filled", "solid"),
    "a large blue square in the center on a plain white background": Scene("square", "blue", "large", 1, "center", "white", "plain", "filled", "solid"),
    "a large green triangle in the center on a plain white background": Scene("triangle", "green", "large", 1, "center", "white", "plain", "filled", "solid"),
    "a large yellow star in the center on a plain black background": Scene("star", "yellow", "large", 1, "center", "black", "plain", "filled", "solid"),
    "two small purple crosses scattered around on a plain beige background": Scene("cross", "purple", "small", 2, "scattered", "beige", "plain", "filled", "solid"),
    "a large orange hexagon in the center on a plain navy background": Scene("hexagon", "orange", "large", 1, "center", "navy", "plain", "filled", "solid"),
}


def test_text_finds_the_image_drawn_from_it(store, tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    paths = {}
    for index, (prompt, scene) in enumerate(SCENES.items()):
        paths[prompt] = folder / f"{index}.png"
        render_scene(scene, 128, random.Random(index)).save(paths[prompt])
    store.ingest(folder)
    assert store.search_text("a red circle", k=1)[0].path == str(paths[next(iter(SCENES))])
    for prompt, path in paths.items():
        assert store.search_text(prompt, k=1)[0].path == str(path), prompt


def test_an_image_ranks_its_own_prompt_among_the_top_texts():
    encoder = load_clip_encoder(resolve_model("clipstore-mini"))
    samples = list(generate(100, seed=4242, size=128))
    images = encoder.encode_images([s.image for s in samples])
    texts = encoder.encode_texts([s.prompt for s in samples])
    ranks = ((images @ texts.T) > np.sum(images * texts, axis=1, keepdims=True)).sum(axis=1)
    assert np.mean(ranks < 5) >= 0.8  # own prompt in the top 5 of 100 for most images
    assert np.mean(ranks == 0) >= 0.5


TEST_SEEDS = range(11, 16)  # drawing sets never used to choose the shipped checkpoint (benchmarks use seeds 0-4)


def test_the_default_weights_tell_shape_and_colour_apart_in_drawings_from_outside_the_render_world():
    from heldout_styles import STYLES, styled_set

    from clipstore.world.pretrain import retrieval_scores

    encoder = load_clip_encoder(resolve_model("clipstore-mini"))
    recalls = []
    for style in STYLES:  # evaluation-only drawings: a renderer, palette and styles the training never used
        for seed in TEST_SEEDS:
            pairs = styled_set(style, seed=seed)
            scores = retrieval_scores(encoder.encode_images([p.image for p in pairs]), encoder.encode_texts([p.prompt for p in pairs]))
            recalls.append((scores.image_to_text[1], scores.text_to_image[1]))
    image_to_text, text_to_image = np.mean(recalls, axis=0)
    assert image_to_text >= 0.7 and text_to_image >= 0.7, recalls  # world-v1: about 0.15 both ways
