"""Offline machines: a model whose weights cannot be downloaded fails at once, clearly, and creates no store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import huggingface_hub.constants
import pytest

import clipstore
from clipstore.encoders.clip import load_clip_encoder
from clipstore.encoders.weights import ensure_weights_obtainable
from clipstore.encoders.identity import resolve_model


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the probe is closed


def test_new_store_with_unobtainable_default_model_is_not_created(tmp_path, empty_hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "new.clipstore"
    with pytest.raises(clipstore.ModelUnavailableError, match="--model clipstore-mini") as caught:
        clipstore.connect(path)
    assert "ViT-B-32:laion2b_s34b_b79k" in str(caught.value) and "HF_HUB_OFFLINE" in str(caught.value)
    assert not path.exists()


def test_unreachable_hub_fails_without_retrying(tmp_path, empty_hf_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(clipstore.ModelUnavailableError, match="cannot be reached"):
        ensure_weights_obtainable(resolve_model("ViT-B-32:openai"))
    with pytest.raises(clipstore.ModelUnavailableError, match="cannot be reached"):
        load_clip_encoder(resolve_model("ViT-B-32:openai"), device="cpu")  # an existing store's model too


def test_a_reachable_proxy_counts_as_online(empty_hf_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        ensure_weights_obtainable(resolve_model("ViT-B-32:openai"))  # no error: the download would go through it


def test_cached_weights_work_offline(empty_hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = empty_hf_cache / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "open_clip_model.safetensors").write_bytes(b"weights")
    ensure_weights_obtainable(resolve_model("ViT-B-32:openai"))  # cached: no network needed


def test_offline_models_need_no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in ("clipstore-mini", "ViT-B-32:random"):
        ensure_weights_obtainable(resolve_model(spec))


@pytest.mark.slow
@pytest.mark.parametrize("command", [["ingest", "{folder}"], ["prompts", "add", "{prompts}"]])
def test_cli_offline_default_model_is_one_clear_line(tmp_path, photo_folder, command):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    store = tmp_path / "offline.clipstore"
    args = [part.format(folder=photo_folder, prompts=prompts) for part in command]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    env.pop("CLIPSTORE_MODEL", None)
    result = subprocess.run(
        [sys.executable, "-m", "clipstore.cli", *args, "--store", str(store)],
        capture_output=True, text=True, timeout=120, env=env,
        cwd=tmp_path,  # not the repository root, whose clipstore/ would shadow the installed package
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no retry warnings
    assert result.stderr.startswith("Error: Cannot load the pretrained weights") and "--model clipstore-mini" in result.stderr
    assert not store.exists()
