"""The open_clip encoder: offline errors, bf16 vs fp32 agreement, precision choice, reduced-scale JPEG decoding."""

from __future__ import annotations

import numpy as np
import pytest

import clipstore
from clipstore.encoders.clip import ClipEncoder, load_clip_encoder, resolve_precision
from clipstore.encoders.identity import resolve_model
from image_factory import pattern_image


def test_offline_pretrained_download_fails_with_the_options(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(clipstore.ModelUnavailableError) as excinfo:
        ClipEncoder(resolve_model("RN50:openai"), device="cpu")
    message = str(excinfo.value)
    assert "offline" in message and "clipstore-mini" in message and "RN50:/path/to/weights" in message


def test_bf16_embeddings_agree_with_fp32(monkeypatch):
    """The check behind using bf16 on bf16-capable CPUs: cosine >= 0.999 on every image and text."""
    identity = resolve_model("clipstore-mini")
    images = [pattern_image(seed, size=(160, 120)) for seed in range(24)]
    fp32 = ClipEncoder(identity, device="cpu", precision="fp32")
    bf16 = ClipEncoder(identity, device="cpu", precision="bf16")
    image_agreement = np.sum(fp32.encode_images(images) * bf16.encode_images(images), axis=1)
    texts = ["a red circle", "two small blue squares on a striped background", "a green triangle sketch"]
    text_agreement = np.sum(fp32.encode_texts(texts) * bf16.encode_texts(texts), axis=1)
    assert image_agreement.min() >= 0.999
    assert text_agreement.min() >= 0.999


def test_precision_auto_picks_bf16_only_where_it_pays(monkeypatch):
    monkeypatch.setattr("clipstore.encoders.clip.cpu_supports_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr("clipstore.encoders.clip.cpu_supports_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError):
        resolve_precision("fp8", "cpu")


def test_reduced_scale_jpeg_decoding_keeps_embeddings(tmp_path):
    """Ingest decodes big JPEGs at reduced DCT scale; the embedding must stay what a full decode gives."""
    import io

    from clipstore.imaging import decode_image

    encoder = load_clip_encoder(resolve_model("clipstore-mini"), device="cpu", precision="fp32")
    agreement = []
    for seed in range(8):
        buffer = io.BytesIO()
        pattern_image(seed, size=(1600, 1200)).save(buffer, format="JPEG", quality=92)
        data = buffer.getvalue()
        full = decode_image(data).image
        reduced = decode_image(data, min_side=encoder.decode_min_side).image
        assert reduced.size[0] < full.size[0]
        vectors = encoder.encode_images([full, reduced])
        agreement.append(float(vectors[0] @ vectors[1]))
    assert min(agreement) >= 0.99
