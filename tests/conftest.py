"""Shared fixtures: real LanceDB stores on tmp_path, the real clipstore-mini open_clip model, real MiniLM."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Model hubs are unreachable in CI: fail fast instead of retrying downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import clipstore  # noqa: E402
from image_factory import build_messy_folder, pattern_image, write_image  # noqa: E402

MINI = "clipstore-mini"


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "test.clipstore"


@pytest.fixture
def store(store_path: Path) -> "clipstore.Store":
    return clipstore.connect(store_path, model=MINI)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Six distinct, clean images in two nested folders."""
    root = tmp_path / "photos"
    for seed in range(6):
        write_image(root / ("a" if seed % 2 else "b") / f"img{seed}.png", pattern_image(seed))
    return root


@pytest.fixture
def messy(tmp_path: Path) -> dict:
    return build_messy_folder(tmp_path / "messy")


@pytest.fixture(scope="session")
def noisy_checkpoint(tmp_path_factory) -> Path:
    """A real open_clip checkpoint of the clipstore-mini architecture, outside any store: the bundled weights
    with seeded noise (0.5 x each tensor's std), so its vectors are clearly another model's."""
    import torch
    from safetensors.torch import save_file

    from clipstore.encoders.clip import load_clip_encoder
    from clipstore.encoders.identity import resolve_model

    state = load_clip_encoder(resolve_model(MINI), device="cpu", precision="fp32").model.state_dict()
    generator = torch.Generator().manual_seed(0)
    noisy = {
        name: (value + 0.5 * value.std() * torch.randn(value.shape, generator=generator)).contiguous()
        if value.is_floating_point() and value.numel() > 1 else value.contiguous()
        for name, value in state.items()
    }
    path = tmp_path_factory.mktemp("checkpoints") / "noisy-mini.safetensors"
    save_file(noisy, str(path))
    return path
