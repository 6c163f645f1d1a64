"""Fixtures of the switch tests (the `world` store itself is in tests/conftest.py: fine-tuning uses it too)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def world_image(world) -> Path:
    """The first image (by path) of the `world` store's folder: a query that is in the store."""
    return sorted((world[1] / "world").rglob("*.png"))[0]
