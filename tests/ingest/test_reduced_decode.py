"""JPEGs larger than a model's input are decoded at a reduced DCT scale (`ModelIdentity.decode_min_side`): the
vectors must agree with those of a full decode (cosine >= 0.999, the bar for a default inference path)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clipstore.encoders.clip import load_clip_encoder
from clipstore.encoders.identity import resolve_model
from clipstore.imaging import decode_image
from image_factory import pattern_image


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(640, 480), (1024, 768), (480, 640)])
def test_reduced_scale_decoding_keeps_the_vectors(size):
    encoder = load_clip_encoder(resolve_model("clipstore-mini"), precision="fp32")
    min_side = encoder.decode_min_side
    images = [jpeg(pattern_image(seed, size)) for seed in range(6)]
    reduced = [decode_image(data, min_side=min_side) for data in images]
    assert all(min(d.image.size) < min(size) for d in reduced)  # really decoded smaller
    assert all(min(d.image.size) >= min_side for d in reduced) and all((d.width, d.height) == size for d in reduced)
    full = encoder.encode_prepared([encoder.prepare(decode_image(data).image) for data in images])
    fast = encoder.encode_prepared([encoder.prepare(d.image) for d in reduced])
    cosine = np.sum(full * fast, axis=1) / np.linalg.norm(full, axis=1) / np.linalg.norm(fast, axis=1)
    assert cosine.min() >= 0.999
