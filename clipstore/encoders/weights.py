"""Whether a model's pretrained weights can be had right now: already cached on disk, or downloadable.

open_clip downloads pretrained weights on first use, from the Hugging Face hub (or a URL). On a machine that
cannot reach it, huggingface_hub retries every request with back-off for minutes and logs each attempt. clipstore
asks first, in a few seconds at most: weights in the local cache are always fine; otherwise the download host (or
the HTTPS proxy, when one is set) must accept a connection. An offline user so gets one clear message at once, and
no store is created for a model that cannot be loaded.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

from clipstore.errors import ModelUnavailableError
from clipstore.encoders.identity import MINI_ARCHITECTURE, RANDOM_WEIGHTS, ModelIdentity

REACHABILITY_TIMEOUT_S = 3.0
"""How long a connection to the download host may take before the host counts as unreachable."""

_DEFAULT_HF_ENDPOINT = "https://huggingface.co"
_URL_CACHE = os.path.join("~", ".cache", "clip")  # where open_clip keeps weights downloaded from a URL
_TRUE = {"1", "on", "yes", "true"}


def ensure_weights_obtainable(identity: ModelIdentity) -> None:
    """Return when `identity`'s weights can be loaded now; raise ModelUnavailableError at once otherwise.

    Only open_clip pretrained tags are downloaded; checkpoint files, clipstore-mini's bundled weights and seeded
    random weights need no network and always pass.
    """
    if not identity.pretrained or identity.pretrained == RANDOM_WEIGHTS or identity.architecture == MINI_ARCHITECTURE:
        return
    source = _download_source(identity)
    if source is None or source.cached():
        return
    if source.is_huggingface and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        why = "HF_HUB_OFFLINE is set"
    else:
        host, port = _connection_target(source.url)
        if _reachable(host, port, REACHABILITY_TIMEOUT_S):
            return
        why = f"{host}:{port} cannot be reached"
    raise ModelUnavailableError(
        f"Cannot load the pretrained weights of {identity.spec}: they are not in the local cache and {why}. "
        f"Connect once so open_clip can download and cache them, pass a local checkpoint with --model "
        f"{identity.architecture}:/path/to/weights, or use --model clipstore-mini (bundled, works offline)."
    )


class _Source:
    """Where open_clip would fetch a model's weights from, and how to tell whether they are cached."""

    def __init__(self, url: str, cached_paths: list[str], hf_files: list[tuple[str, str]]):
        self.url = url
        self._cached_paths = cached_paths
        self._hf_files = hf_files

    @property
    def is_huggingface(self) -> bool:
        return bool(self._hf_files)

    def cached(self) -> bool:
        if any(os.path.isfile(os.path.expanduser(path)) for path in self._cached_paths):
            return True
        if not self._hf_files:
            return False
        from huggingface_hub import try_to_load_from_cache

        return any(isinstance(try_to_load_from_cache(repo, name), str) for repo, name in self._hf_files)


def _download_source(identity: ModelIdentity) -> _Source | None:
    """The download open_clip would do for a pretrained tag (mirrors `open_clip.pretrained.download_pretrained`)."""
    import open_clip

    config = open_clip.get_pretrained_cfg(identity.architecture, identity.pretrained) or {}
    if config.get("file"):
        return None
    hub = config.get("hf_hub", "")
    if hub and _has_huggingface_hub():
        repo, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        names = [filename]
        if filename == "open_clip_pytorch_model.bin":  # open_clip tries a .safetensors twin first
            names.insert(0, "open_clip_model.safetensors")
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        endpoint = os.environ.get("HF_ENDPOINT") or _DEFAULT_HF_ENDPOINT
        return _Source(endpoint, [], [(repo, name) for name in names])
    url = config.get("url", "")
    if url:
        return _Source(url, [os.path.join(_URL_CACHE, os.path.basename(urlsplit(url).path))], [])
    return None


def _has_huggingface_hub() -> bool:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return False
    return True


def _connection_target(url: str) -> tuple[str, int]:
    """The host and port a download from `url` connects to first: the proxy when one is configured."""
    parts = urlsplit(url)
    proxy = ""
    for name in (f"{parts.scheme}_proxy", "all_proxy"):
        proxy = os.environ.get(name) or os.environ.get(name.upper()) or proxy
        if proxy:
            break
    if proxy and not _bypasses_proxy(parts.hostname or ""):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    default_port = 443 if parts.scheme == "https" else 80
    return parts.hostname or "", parts.port or default_port


def _bypasses_proxy(host: str) -> bool:
    skip = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
    entries = [entry.strip().lstrip(".") for entry in skip.split(",") if entry.strip()]
    return "*" in entries or any(host == entry or host.endswith("." + entry) for entry in entries)


def _reachable(host: str, port: int, timeout: float) -> bool:
    """True when a TCP connection to host:port opens within `timeout` seconds (name lookup included)."""
    if not host:
        return False
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    # A name lookup has no timeout of its own: run the attempt in a thread and stop waiting for it in time.
    worker = threading.Thread(target=attempt, name="clipstore-reachability", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(outcome and outcome[0])
