"""The cached vision tower run by torch embeds like ClipEncoder, without importing open_clip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import clipstore
from clipstore.encoders.clip import ClipEncoder
from clipstore.encoders.identity import resolve_model
from clipstore.encoders.torch_tower import cached_torch_tower
from image_factory import pattern_image


@pytest.fixture
def tower_cache(tmp_path, monkeypatch):
    """This test's own, empty tower cache, and no model loaded yet in this process (as in a new one)."""
    from clipstore.encoders import clip, torch_tower
    from clipstore.encoders import tower_cache as cache

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(clip, "_cache", {})
    monkeypatch.setattr(torch_tower, "_towers", {})
    return tmp_path / "cache"


@pytest.mark.parametrize("precision, agreement", [("fp32", 0.9999), ("bf16", 0.999)])
def test_the_torch_tower_embeds_what_clip_encoder_embeds(tower_cache, precision, agreement):
    identity = resolve_model("clipstore-mini")
    assert cached_torch_tower(identity) is None  # nothing cached yet: callers use ClipEncoder
    encoder = ClipEncoder(identity, device="cpu", precision="fp32")  # loading the model caches its towers
    tower = cached_torch_tower(identity, precision=precision)
    assert tower is not None and tower.dim == encoder.dim
    prepared = [encoder.prepare(pattern_image(seed, size=(90 + 13 * seed, 70 + 5 * seed))) for seed in range(12)]
    ours, theirs = tower.encode_prepared(prepared), ClipEncoder(identity, device="cpu", precision=precision).encode_prepared(prepared)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(ours * theirs, axis=1))) >= agreement
    assert tower.encode_prepared([]).shape == (0, encoder.dim)


def test_int8_and_uncached_models_have_no_torch_tower(tower_cache):
    identity = resolve_model("clipstore-mini")
    ClipEncoder(identity, device="cpu", precision="fp32")
    assert cached_torch_tower(identity, precision="int8") is None
    assert cached_torch_tower(resolve_model("ViT-B-32:random")) is None


def test_a_process_embedding_with_the_torch_tower_never_imports_open_clip(tower_cache):
    identity = resolve_model("clipstore-mini")
    ClipEncoder(identity, device="cpu", precision="fp32")
    code = (
        "import sys, json, numpy as np; from clipstore.encoders.identity import ModelIdentity;"
        "from clipstore.encoders.torch_tower import cached_torch_tower;"
        f"tower = cached_torch_tower(ModelIdentity.from_json({identity.to_json()!r}));"
        "vectors = tower.encode_prepared([np.zeros((64, 64, 3), np.uint8)]);"
        "print(json.dumps([list(vectors.shape), 'open_clip' in sys.modules, 'torchvision' in sys.modules]))"
    )
    here = str(Path(clipstore.__file__).parents[1])  # the child imports the clipstore this test imported
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/", env=env).stdout
    assert json.loads(out) == [[1, identity.embed_dim], False, False]


def test_once_the_tower_is_cached_an_ingest_process_never_imports_open_clip(tower_cache, tmp_path):
    """The first ingest on a machine loads the full model (and caches its towers); a later ingest process embeds
    with the cached tower in torch, and its vectors agree with the full model's."""
    from image_factory import write_image

    for seed in range(3):
        write_image(tmp_path / "photos" / f"{seed}.png", pattern_image(seed, size=(100, 80)))
    first = clipstore.connect(tmp_path / "store.clipstore", model="clipstore-mini")
    assert first.ingest(tmp_path / "photos").added == 3
    write_image(tmp_path / "photos" / "new.png", pattern_image(7, size=(90, 120)))
    code = (
        "import sys, json, clipstore;"
        f"report = clipstore.connect({str(tmp_path / 'store.clipstore')!r}).ingest({str(tmp_path / 'photos')!r});"
        "print(json.dumps([report.added, 'open_clip' in sys.modules]))"
    )
    here = str(Path(clipstore.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/", env=env).stdout
    assert json.loads(out) == [1, False]
    store = clipstore.connect(tmp_path / "store.clipstore")
    hit = store.search_image(tmp_path / "photos" / "new.png", k=1)[0]
    assert hit.path.endswith("new.png") and hit.score >= 0.99
