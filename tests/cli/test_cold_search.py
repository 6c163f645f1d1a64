"""A cold `clipstore search` / `similar` process loads only what it needs: once the model's towers are cached on
the machine, no open_clip, torch, torchvision, transformers or sentence-transformers is imported, and the
answers are the Python API's. Importing the command line itself imports no model or database library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import clipstore
from clipstore.encoders.clip import ClipEncoder
from clipstore.encoders.identity import resolve_model
from clipstore.encoders.tower_cache import CACHE_ENV

MODEL_LIBRARIES = {"open_clip", "torch", "torchvision", "transformers", "sentence_transformers"}


def _cold(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `python -X importtime -m clipstore.cli ARGS` in a new process; its result and every module it imported.

    cwd is outside the repository (whose clipstore/ would shadow the installed package); PYTHONPATH names the
    folder this test imported clipstore from, so the child runs the same code.
    """
    package_root = str(Path(clipstore.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "clipstore.cli", *args],
        capture_output=True, text=True, timeout=300, cwd=cwd, env=env,
    )
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    return result, imported


def _top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.fixture
def cached_store(tmp_path, photo_folder, monkeypatch) -> clipstore.Store:
    """A clipstore-mini store of the six photos, with the model's towers in this test's own cache folder."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    store = clipstore.connect(tmp_path / "s.clipstore", model="clipstore-mini")
    store.ingest(photo_folder)
    ClipEncoder(resolve_model("clipstore-mini"), device="cpu", precision="fp32")  # a model load caches the towers
    return store


def _assert_same_hits(stdout: str, hits: list[clipstore.SearchHit]) -> None:
    cold = json.loads(stdout)["hits"]
    assert [(hit["id"], hit["path"]) for hit in cold] == [(hit.id, hit.path) for hit in hits]
    assert [hit["score"] for hit in cold] == pytest.approx([hit.score for hit in hits], abs=1e-6)


def test_cold_search_imports_no_model_library_and_answers_as_the_api(cached_store, tmp_path):
    result, imported = _cold(["search", "a red circle", "-k", "4", "--json", "--store", cached_store.path], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not _top_level(imported) & MODEL_LIBRARIES
    _assert_same_hits(result.stdout, cached_store.search_text("a red circle", k=4))


def test_cold_similar_imports_no_model_library_and_answers_as_the_api(cached_store, tmp_path, photo_folder):
    query = photo_folder / "a" / "img1.png"
    result, imported = _cold(["similar", str(query), "-k", "3", "--json", "--store", cached_store.path], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not _top_level(imported) & MODEL_LIBRARIES
    hits = cached_store.search_image(query, k=3)
    _assert_same_hits(result.stdout, hits)
    assert hits[0].path == str(query) and hits[0].score == pytest.approx(1.0, abs=2e-3)


@pytest.mark.slow
def test_the_first_search_on_a_machine_caches_the_towers_for_the_next(tmp_path, photo_folder, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "empty-cache"))
    store = clipstore.connect(tmp_path / "s.clipstore", model="clipstore-mini")
    store.ingest(photo_folder)  # in this process: its model load may not write to this test's cache
    args = ["search", "a red circle", "-k", "6", "--json", "--store", store.path]
    first, imported_first = _cold(args, tmp_path)
    second, imported_second = _cold(args, tmp_path)
    assert first.returncode == second.returncode == 0
    assert "open_clip" in _top_level(imported_first)  # nothing cached yet: the full model was loaded...
    assert not _top_level(imported_second) & MODEL_LIBRARIES  # ...and cached its towers on the way
    assert json.loads(first.stdout) == json.loads(second.stdout)  # the first query was embedded by the tower too


def test_importing_the_command_line_imports_no_model_or_database_library(tmp_path):
    code = "import sys, clipstore.cli; print(' '.join(sorted(sys.modules)))"
    package_root = str(Path(clipstore.__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": package_root},
    )
    modules = set(result.stdout.split())
    assert "clipstore.cli" in modules
    assert not _top_level(modules) & (MODEL_LIBRARIES | {"lancedb", "pyarrow", "safetensors"})
    assert not {"clipstore.describe.train", "clipstore.training.loop", "clipstore.encoders.clip", "clipstore.store.facade"} & modules
