"""The Pillow-only image geometry gives open_clip's pixels, bit for bit, without importing torch."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

import clipstore
from clipstore.encoders.geometry import geometry_for
from clipstore.encoders.identity import resolve_model

SIZES = [(320, 240), (240, 320), (224, 224), (225, 224), (224, 225), (500, 224), (100, 50), (1000, 999), (223, 400),
         (640, 480), (333, 777), (7, 3000), (64, 64), (63, 65), (1, 1)]


def _image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1.5))  # edges and smooth areas


@pytest.mark.parametrize("spec", ["clipstore-mini", "ViT-B-32:random"])
@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_pillow_geometry_equals_open_clips_transform(spec, resize_mode, interpolation):
    from clipstore.encoders.clip import _image_transform, _split_image_transform

    identity = dataclasses.replace(resolve_model(spec), resize_mode=resize_mode, interpolation=interpolation)
    theirs = _split_image_transform(_image_transform(identity))[0]
    ours = geometry_for(identity)
    for seed, (width, height) in enumerate(SIZES):
        for mode in ("RGB", "L", "RGBA", "P"):
            image = _image(width, height, seed).convert(mode)
            expected, got = np.asarray(theirs(image)), np.asarray(ours(image))
            assert got.dtype == expected.dtype == np.uint8 and got.shape == expected.shape == (identity.image_size, identity.image_size, 3)
            assert np.array_equal(got, expected), (width, height, mode)


def test_modes_it_does_not_reproduce_fall_back_to_open_clip():
    from clipstore.encoders.clip import image_geometry

    identity = dataclasses.replace(resolve_model("clipstore-mini"), resize_mode="longest")
    assert geometry_for(identity) is None
    assert np.asarray(image_geometry(identity)(_image(90, 40, 0))).shape == (64, 64, 3)  # open_clip's own


def test_the_geometry_of_a_model_imports_neither_torch_nor_open_clip():
    code = (
        "import sys; from clipstore.encoders.clip import image_geometry; from clipstore.encoders.identity import ModelIdentity;"
        "from PIL import Image; import json;"
        f"identity = ModelIdentity.from_json({resolve_model('ViT-B-32:random').to_json()!r});"
        "assert image_geometry(identity)(Image.new('RGB', (300, 200))).size == (224, 224);"
        "print(json.dumps(sorted(m for m in ('torch', 'torchvision', 'open_clip') if m in sys.modules)))"
    )
    here = str(Path(clipstore.__file__).parents[1])  # the child imports the clipstore this test imported
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/", env=env).stdout
    assert loaded.strip() == "[]"
