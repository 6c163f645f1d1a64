"""Fixtures of the LanceDB plugin tests: product photos of an app, and a clipstore store with a prompt bank and a
short Model A head to describe them with."""

from __future__ import annotations

from pathlib import Path

import pytest

import clipstore
from clipstore.world import render_folder
from image_factory import pattern_image, write_image, write_text_as_image, write_truncated_jpeg

MINI = "clipstore-mini"


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    """Six distinct product photos (PNG and JPEG) under tmp_path / "photos", in sku order."""
    return [write_image(tmp_path / "photos" / f"p{seed}.{'jpg' if seed % 2 else 'png'}", pattern_image(seed)) for seed in range(6)]


@pytest.fixture
def broken(tmp_path: Path) -> dict[str, Path]:
    """Image column values that cannot be read: a truncated JPEG, a text file named .jpg, a missing file."""
    return {
        "truncated": write_truncated_jpeg(tmp_path / "broken" / "truncated.jpg"),
        "text": write_text_as_image(tmp_path / "broken" / "notes.jpg"),
        "missing": tmp_path / "broken" / "gone.png",
    }


@pytest.fixture(scope="session")
def caption_store(tmp_path_factory) -> "clipstore.Store":
    """A clipstore-mini store of 80 rendered images whose prompts fill its bank, with one short head-only
    Model A (seconds to train): what `clipstore.lancedb.describe` captions an app's images with."""
    root = tmp_path_factory.mktemp("captions")
    render_folder(root / "world", 80, seed=3)
    store = clipstore.connect(root / "captions.clipstore", model=MINI)
    report = store.ingest(root / "world")
    assert report.prompts_found == 80 and not report.failed
    store.train(epochs=6, freeze_vision=True, views=1, patience=3)
    return store


@pytest.fixture
def catalogue(tmp_path: Path) -> list[dict]:
    """Eight rendered images of shape/colour pairs the caption store never saw, as an app's products:
    [{"sku", "image" (absolute path), "drawn_from" (the prompt it was rendered from)}]."""
    import json

    rendered = render_folder(tmp_path / "catalogue", 8, seed=5, split="heldout")
    records = [json.loads(line) for line in Path(rendered.manifest).read_text(encoding="utf-8").splitlines()]
    return [
        {"sku": f"sku-{i}", "image": str(Path(rendered.folder) / record["path"]), "drawn_from": record["prompt"]}
        for i, record in enumerate(records)
    ]
