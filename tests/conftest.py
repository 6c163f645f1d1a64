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
