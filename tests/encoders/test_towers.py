"""The numpy towers compute what open_clip computes: loading a model caches them, and they embed texts and images
at cosine >= 0.9999 with the model's float32 `encode_text` / `encode_image`; towers they cannot represent are
refused, never approximated."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipstore.encoders.clip import ClipEncoder, create_model
from clipstore.encoders.identity import resolve_model
from clipstore.encoders.tower_cache import cached_tower
from clipstore.encoders.tower_export import Unrepresentable, export_text_tower, export_vision_tower
from image_factory import pattern_image

TEXTS = [
    "a red circle",
    "",
    "two small blue squares on a striped background",
    "A GREEN TRIANGLE, sketch!!! &amp; 日本語 🚀",
    " ".join(["a prompt longer than any context length"] * 15),
]


def _images() -> list[Image.Image]:
    """Landscape, portrait, tiny, exactly square and huge images (the resize and crop paths)."""
    images = [pattern_image(seed, size=size) for seed, size in enumerate([(160, 120), (90, 200), (23, 17), (64, 64), (1000, 700)])]
    return images + [images[0].convert("L").convert("RGB")]


def _agreement(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    return float(np.min(np.sum(ours * theirs, axis=1)))


def _check_towers_agree(spec: str) -> None:
    identity = resolve_model(spec)
    encoder = ClipEncoder(identity, device="cpu", precision="fp32")  # loading it caches both towers
    text, vision = cached_tower("text", identity), cached_tower("vision", identity)
    assert text is not None and vision is not None
    assert _agreement(text.encode_texts(TEXTS), encoder.encode_texts(TEXTS)) >= 0.9999
    images = _images()
    assert _agreement(vision.encode_images(images), encoder.encode_images(images)) >= 0.9999


def test_clipstore_mini_towers_agree_with_open_clip():
    _check_towers_agree("clipstore-mini")


@pytest.mark.parametrize("name", ["cs-quickgelu", "cs-tanh-eps", "cs-scaled-pooled", "cs-eos-canonical", "cs-custom-text"])
def test_tower_variants_agree_with_open_clip(variants, name):
    """QuickGELU, tanh GELU and LayerNorm eps, layer scale, last/eos pooling, a biased text projection, average
    pooling without ln_pre, LayerNorm after pooling, canonicalising tokenizer, CustomTextCLIP."""
    _check_towers_agree(f"{name}:random")


@pytest.mark.slow
def test_vit_b_32_towers_agree_with_open_clip():
    """A standard architecture at full size (seeded random weights: offline)."""
    _check_towers_agree("ViT-B-32:random")


@pytest.mark.parametrize("name", ["cs-qknorm", "cs-bidirectional", "cs-reduced", "cs-hf-tokenizer"])
def test_towers_the_numpy_code_cannot_compute_are_refused_and_not_cached(variants, name):
    _, text_ok, vision_ok = variants[name]
    identity = resolve_model(f"{name}:random")
    ClipEncoder(identity, device="cpu", precision="fp32")
    assert (cached_tower("text", identity) is not None, cached_tower("vision", identity) is not None) == (text_ok, vision_ok)
    import open_clip

    model = create_model(identity).eval()
    if not text_ok:
        made = []
        with pytest.raises(Unrepresentable):
            export_text_tower(model, identity, lambda: made.append(1) or open_clip.get_tokenizer(name))
        assert made == ([1] if name == "cs-reduced" else [])  # a Hugging Face tokenizer is never made (downloaded)
    if not vision_ok:
        with pytest.raises(Unrepresentable):
            export_vision_tower(model, identity)


def test_a_model_in_bf16_is_not_exported():
    """The towers are exported from the float32 model only (a bf16 copy would cache rounded weights)."""
    import torch

    identity = resolve_model("clipstore-mini")
    model = create_model(identity).eval().to(dtype=torch.bfloat16)
    with pytest.raises(Unrepresentable, match="float32"):
        export_vision_tower(model, identity)
