"""The example scripts run end to end, offline, and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each runs a script in a fresh interpreter that loads the models (~10 s)

EXAMPLES = Path(__file__).parent.parent / "examples"


def _run(*args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_sample_images_then_ingest_and_search(tmp_path):
    _run(str(EXAMPLES / "sample_images.py"), "samples", "--n", "12", cwd=tmp_path)
    assert len(list((tmp_path / "samples").rglob("*.png"))) == 14
    out = _run(str(EXAMPLES / "ingest_and_search.py"), "samples", "--store", "s.clipstore", cwd=tmp_path)
    assert "added 12, duplicates 2, unchanged 0, failed 1" in out
    assert "not-a-photo.jpg" in out
    assert out.count(str(tmp_path / "samples")) >= 10  # both result lists name stored files
    assert "image -> image" in out


def test_embedded_app_groups_exact_copies(tmp_path):
    # A relative folder, as a user types it: the app must still tell a photo's own hit from another photo's.
    _run(str(EXAMPLES / "sample_images.py"), "samples", "--n", "9", cwd=tmp_path)
    out = _run(str(EXAMPLES / "embedded_app.py"), "samples", "--store", "lib.clipstore", "--threshold", "0.999", cwd=tmp_path)
    assert "library: 9 photos (9 new, 1 unreadable)" in out
    groups = [block.split() for block in out.split("look-alikes:")[1:]]
    copies = sorted((tmp_path / "samples" / "copies").iterdir())
    expected = [sorted([str(copy), str(next((tmp_path / "samples").rglob(copy.name.removeprefix("copy-of-"))))]) for copy in copies]
    assert sorted(sorted(group) for group in groups) == sorted(expected)  # exactly the two copies with their originals


def test_describe_example_trains_and_describes(tmp_path):
    out = _run(str(EXAMPLES / "describe_images.py"), "ex", "--n", "120", "--epochs", "3", "--show", "2", cwd=tmp_path)
    assert "ingested 120 images; 120 carried a prompt" in out
    assert "trained head" in out and "validation Avg-Cos model_a" in out
    assert out.count("drawn from:") == 2 and out.count("described:") == 4 and ", alpha " in out


def test_lancedb_app_searches_and_captions_its_own_table(tmp_path):
    out = _run(str(EXAMPLES / "lancedb_app.py"), "ex", "--products", "6", cwd=tmp_path)
    assert "catalogue: 7 products (1 photo unreadable: no vector)" in out
    text_hits = out.split("text -> image")[1].splitlines()[1:4]
    assert len(text_hits) == 3 and all(line.split()[0].startswith("sku-") for line in text_hits)
    own, *others = out.split("image -> image (like sku-003):")[1].splitlines()[1:4]
    assert own.split()[0] == "sku-003" and float(own.split()[-1]) > 0.99 > max(float(line.split()[-1]) for line in others)
    captions = out.split("\ncaptions: ")[1]
    assert captions.startswith("6 described, 1 failed")
    assert captions.count("\n  sku-") == 7 and "sku-006  no caption: not an image (looks like text)" in captions
    assert "best match for 'white circles on a dark green background': sku-" in out
