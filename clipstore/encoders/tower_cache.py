"""The numpy towers between processes: a small per-user cache, written when the full model is loaded anyway,
verified on every read.

A cold `clipstore search` must not import torch and open_clip just to embed one query (seconds of imports for
milliseconds of arithmetic). So whenever `ClipEncoder` loads a model (ingest, the first search on a machine), it
hands the float32 model to `remember_towers`, which exports its text and vision towers as numpy weights
(`clipstore.encoders.tower_export`: refused unless they compute what the model computes) into

    $CLIPSTORE_CACHE_DIR (default: $XDG_CACHE_HOME/clipstore, else ~/.cache/clipstore)
        text-towers/<key>.safetensors      vision-towers/<key>.safetensors

where <key> hashes the model identity (without where its checkpoint lies), the cache format and the installed
open_clip's version file. Each file is written under a temporary name and renamed into place, so a reader sees a
whole file or none. Files are written by `safetensors.numpy`; their metadata holds the tower's spec and the
SHA-256 of every tensor (of every block of ROW_BLOCK rows of the token embedding, which a query reads a few rows
of). They are read memory-mapped (the weights are views of the page cache, in memory once), and every tensor is
checked against its digest when read: a file that does not match is deleted and never used, and the next full
load writes it again. `encode_query` is the one entry point for search: the cached tower when there is one, else the
full encoder (whose loading caches the tower for the next process).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import tempfile
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from clipstore.encoders.identity import ModelIdentity

if TYPE_CHECKING:
    from clipstore.encoders.towers import TextTower, VisionTower

CACHE_ENV = "CLIPSTORE_CACHE_DIR"
FORMAT = 1
"""Version of the cache files' layout and of the towers' spec; part of every key."""
FOLDERS = {"text": "text-towers", "vision": "vision-towers"}
ENCODE = {"text": "encode_texts", "vision": "encode_images"}
ROW_BLOCK = 512
"""Rows of the token embedding per digest: a query reads and checks only the blocks holding its tokens."""
MANIFEST_KEY = "clipstore.tower"
TOKEN_EMBEDDING = "token_embedding"

log = logging.getLogger(__name__)
_loaded: dict[str, "TextTower | VisionTower"] = {}
_lock = threading.Lock()


class DamagedCache(Exception):
    """A cached tower file does not match its digests (or cannot be parsed)."""


def cache_root() -> str:
    """The folder of clipstore's per-user cache: $CLIPSTORE_CACHE_DIR, else $XDG_CACHE_HOME/clipstore, else
    ~/.cache/clipstore."""
    if os.environ.get(CACHE_ENV):
        return os.path.abspath(os.path.expanduser(os.environ[CACHE_ENV]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "clipstore")


def _open_clip_folder() -> str | None:
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    locations = list(spec.submodule_search_locations or []) if spec else []
    return locations[0] if locations else None


@lru_cache(maxsize=1)
def _open_clip_version() -> str | None:
    """SHA-256 of the installed open_clip's version file (read once per process), or None without open_clip."""
    folder = _open_clip_folder()
    if folder is None:
        return None
    try:
        with open(os.path.join(folder, "version.py"), "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


@lru_cache(maxsize=64)
def tower_key(kind: str, identity: ModelIdentity) -> str | None:
    """Hex key of `identity`'s `kind` tower: its identity (not where its checkpoint lies), FORMAT and the
    installed open_clip's version file (a new open_clip may build a model differently). None without open_clip."""
    open_clip_version = _open_clip_version()
    if open_clip_version is None:
        return None
    described = {name: value for name, value in identity.to_dict().items() if name not in ("checkpoint_path", "spec")}
    text = json.dumps({"format": FORMAT, "kind": kind, "identity": described, "open_clip": open_clip_version}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tower_path(kind: str, identity: ModelIdentity) -> tuple[str, str] | None:
    """(path of the cache file, key) of `identity`'s `kind` tower, or None when it has no key."""
    key = tower_key(kind, identity)
    return (os.path.join(cache_root(), FOLDERS[kind], f"{key}.safetensors"), key) if key else None


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


# --- reading --------------------------------------------------------------------------------------------------


def cached_tower(kind: str, identity: ModelIdentity) -> "TextTower | VisionTower | None":
    """The numpy `kind` ("text" or "vision") tower of `identity` from the cache (loaded once per process), or
    None when this machine has none: the model was not loaded here yet (since the cache was emptied), or its
    tower is not one the numpy code computes, or the cache cannot be written. A damaged file is deleted and
    None returned."""
    located = tower_path(kind, identity)
    if located is None:
        return None
    path, key = located
    with _lock:
        tower = _loaded.get(path)
        if tower is None:
            try:
                tower = _load(kind, path, key)
            except DamagedCache as exc:
                log.debug("ignoring the damaged tower cache %s: %s", path, exc)
                _discard(path)
                return None
            if tower is None:
                return None
            _loaded[path] = tower
        return tower


def encode_query(kind: str, identity: ModelIdentity, inputs: Sequence[Any], full_encoder: Callable[[], Any]) -> np.ndarray:
    """Search queries (texts for "text", PIL images for "vision") -> (n, embed_dim) float32, L2-normalised, by
    `identity`'s cached numpy tower, else by `full_encoder()` (the model's `ClipEncoder`). Loading the full
    encoder caches the tower where the model allows it, so then the tower embeds these queries too: every query
    of a model takes the same path, whichever came first."""
    tower = cached_tower(kind, identity)
    if tower is None:
        encoder = full_encoder()
        tower = cached_tower(kind, identity)
        if tower is None:
            return getattr(encoder, ENCODE[kind])(list(inputs))
    try:
        return getattr(tower, ENCODE[kind])(list(inputs))
    except DamagedCache as exc:  # a block of the token embedding read only now
        log.debug("ignoring the damaged %s tower of %s: %s", kind, identity.spec, exc)
        located = tower_path(kind, identity)
        if located:
            _discard(located[0])
    return getattr(full_encoder(), ENCODE[kind])(list(inputs))


def _discard(path: str) -> None:
    _loaded.pop(path, None)
    try:
        os.remove(path)
    except OSError:
        pass


class _MappedFile:
    """A safetensors file of float32 tensors, memory-mapped: tensors are read-only views of the mapping, so a
    tower's weights are in memory once (the page cache's pages), not copied. The layout is safetensors' (an
    8-byte little-endian header size, a JSON header of dtype/shape/data_offsets per tensor and `__metadata__`,
    then the data); anything that does not add up raises DamagedCache."""

    def __init__(self, path: str):
        try:
            self._data = np.memmap(path, dtype=np.uint8, mode="r")
            header_size = int(self._data[:8].view("<u8")[0]) if len(self._data) >= 8 else -1
            if not 0 < header_size <= len(self._data) - 8:
                raise DamagedCache("no safetensors header")
            header = json.loads(bytes(self._data[8 : 8 + header_size]).decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise DamagedCache(f"unreadable ({exc})") from exc
        self.metadata = header.pop("__metadata__", None) or {}
        self._tensors = header
        self._base = 8 + header_size

    def names(self) -> set[str]:
        return set(self._tensors)

    def tensor(self, name: str) -> np.ndarray:
        try:
            entry = self._tensors[name]
            shape = tuple(int(size) for size in entry["shape"])
            start, end = (self._base + int(offset) for offset in entry["data_offsets"])
            if entry["dtype"] != "F32" or not self._base <= start <= end <= len(self._data) or end - start != 4 * math.prod(shape):
                raise DamagedCache(f"tensor {name} is not where its header says")
        except (KeyError, TypeError, ValueError) as exc:
            raise DamagedCache(f"tensor {name}: bad header entry ({exc})") from exc
        return np.asarray(self._data[start:end]).view("<f4").reshape(shape)


def _manifest(file: _MappedFile, key: str, kind: str) -> dict[str, Any]:
    try:
        manifest = json.loads(file.metadata[MANIFEST_KEY])
        if manifest["format"] != FORMAT or manifest["key"] != key or manifest["kind"] != kind:
            raise DamagedCache("its manifest names another tower")
        names = set(manifest["digests"]) | set(manifest["row_blocks"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DamagedCache(f"unreadable manifest ({exc})") from exc
    if names != file.names():
        raise DamagedCache("its tensors are not the ones its manifest lists")
    return manifest


def _load(kind: str, path: str, key: str) -> "TextTower | VisionTower | None":
    from clipstore.encoders.towers import TextTower, VisionTower

    if not os.path.isfile(path):
        return None
    file = _MappedFile(path)
    manifest = _manifest(file, key, kind)
    weights = {}
    for name, digest in manifest["digests"].items():
        weights[name] = file.tensor(name)
        if _digest(weights[name]) != digest:
            raise DamagedCache(f"tensor {name} does not match its digest")
    spec = manifest["spec"]
    if kind == "vision":
        return VisionTower(spec, weights)
    tokenizer = _tokenizer(spec["tokenizer"])
    if tokenizer is None:
        return None
    rows = _RowReader(file.tensor(TOKEN_EMBEDDING), manifest["row_blocks"][TOKEN_EMBEDDING])
    return TextTower(spec, weights, rows, tokenizer)


def _tokenizer(spec: dict[str, Any]):
    """The tokenizer a cached text tower was checked with, or None when open_clip's vocabulary file is not that
    one any more (open_clip changed: the cache stays, unused, until its model is loaded again)."""
    from clipstore.encoders.tokenizer import ClipTokenizer, VocabularyNotFound, vocab_path

    try:
        path = vocab_path()
        with open(path, "rb") as handle:
            if hashlib.sha256(handle.read()).hexdigest() != spec["vocab_sha256"]:
                return None
    except (OSError, VocabularyNotFound):
        return None
    return ClipTokenizer(int(spec["context_length"]), clean=spec["clean"], path=path)


class _RowReader:
    """Rows of a (rows, width) mapped tensor, each block of rows checked against its digest when first read."""

    def __init__(self, table: np.ndarray, blocks: dict[str, Any]):
        self._table = table
        self._rows = int(blocks["rows"])
        self._digests = list(blocks["digests"])
        self._checked: set[int] = set()
        self._lock = threading.Lock()
        if len(self._digests) != -(-len(table) // self._rows):
            raise DamagedCache("the token embedding's blocks are not the ones its manifest lists")

    def __call__(self, ids: Sequence[int]) -> np.ndarray:
        with self._lock:
            for block in sorted({i // self._rows for i in ids} - self._checked):
                if not 0 <= block < len(self._digests):
                    raise DamagedCache(f"token id {block * self._rows}+ is beyond the token embedding")
                if _digest(self._table[block * self._rows : (block + 1) * self._rows]) != self._digests[block]:
                    raise DamagedCache(f"rows {block * self._rows}+ of the token embedding do not match their digest")
                self._checked.add(block)
        return self._table[list(ids)]


# --- writing --------------------------------------------------------------------------------------------------


def remember_towers(identity: ModelIdentity, model: Any, preprocess: Callable[[Any], Any], tokenizer: Callable[[], Any]) -> None:
    """Cache the numpy towers of `identity`'s freshly loaded float32 open_clip `model` (its image transform
    `preprocess`, `tokenizer()` its open_clip tokenizer) unless they are cached already. Towers the numpy code
    cannot represent exactly are skipped; a cache that cannot be written is skipped too: this never fails."""
    from clipstore.encoders.tower_export import Unrepresentable, verified_text_tower, verified_vision_tower

    exports = {
        "text": lambda: verified_text_tower(model, identity, tokenizer),
        "vision": lambda: verified_vision_tower(model, identity, preprocess),
    }
    for kind, export in exports.items():
        located = tower_path(kind, identity)
        if located is None or _is_cached(kind, *located):
            continue
        try:
            spec, arrays = export()
            save_tower(kind, located[0], located[1], identity, spec, arrays)
        except Unrepresentable as exc:
            log.debug("no numpy %s tower for %s: %s", kind, identity.spec, exc)
        except Exception as exc:  # a cache must never break loading the model
            log.debug("could not cache the %s tower of %s: %r", kind, identity.spec, exc)


def _is_cached(kind: str, path: str, key: str) -> bool:
    """A file with this tower's manifest is there (its digests are checked when it is read)."""
    if not os.path.isfile(path):
        return False
    try:
        _manifest(_MappedFile(path), key, kind)
    except DamagedCache:
        return False
    return True


def save_tower(kind: str, path: str, key: str, identity: ModelIdentity, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write one tower file atomically: a temporary file in the same folder, flushed to disk, renamed over
    `path`."""
    from safetensors.numpy import save_file

    arrays = {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in arrays.items()}
    digests = {name: _digest(array) for name, array in arrays.items() if name != TOKEN_EMBEDDING}
    row_blocks = {}
    if TOKEN_EMBEDDING in arrays:
        table = arrays[TOKEN_EMBEDDING]
        row_blocks[TOKEN_EMBEDDING] = {"rows": ROW_BLOCK, "digests": [_digest(table[start : start + ROW_BLOCK]) for start in range(0, len(table), ROW_BLOCK)]}
    manifest = {
        "format": FORMAT, "kind": kind, "key": key, "model": identity.spec, "spec": spec,
        "digests": digests, "row_blocks": row_blocks,
    }
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".tower-", suffix=".tmp", dir=folder)
    os.close(descriptor)
    try:
        save_file(arrays, temporary, metadata={MANIFEST_KEY: json.dumps(manifest, sort_keys=True)})
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise
