"""clipstore: an embedded LanceDB store that turns folders of images into a searchable store.

    import clipstore
    store = clipstore.connect("~/my.clipstore")
    store.ingest("~/photos")
    store.search_text("a dog on a beach", k=10)

Heavy dependencies (torch, open_clip, lancedb) are imported only when first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ClipstoreError,
    HeadNotFoundError,
    NothingToDescribeWithError,
    TrainingDataError,
    InvalidImageError,
    ManifestError,
    ModelMismatchError,
    ModelSpecError,
    ModelUnavailableError,
    PromptSelectionError,
    SourceNotFoundError,
    StoreDamagedError,
    StoreNotFoundError,
    StoreVersionError,
)
from .paths import default_store_path
from .prompt_files import PromptFileError
from .results import FileFailure, IngestReport, MigrationStatus, SearchHit, StoreInfo

if TYPE_CHECKING:
    from .prompts import DuplicatePrompt, PromptHit, PromptInsertReport, PromptRemoveReport, RejectedPrompt, StoredPrompt
    from .store import Store

__version__ = "0.1.0"

__all__ = [
    "ClipstoreError",
    "DuplicatePrompt",
    "FileFailure",
    "HeadNotFoundError",
    "NothingToDescribeWithError",
    "TrainingDataError",
    "IngestReport",
    "InvalidImageError",
    "ManifestError",
    "MigrationStatus",
    "ModelMismatchError",
    "ModelSpecError",
    "ModelUnavailableError",
    "PromptFileError",
    "PromptHit",
    "PromptInsertReport",
    "PromptRemoveReport",
    "PromptSelectionError",
    "RejectedPrompt",
    "SearchHit",
    "SourceNotFoundError",
    "Store",
    "StoreDamagedError",
    "StoreInfo",
    "StoreNotFoundError",
    "StoreVersionError",
    "StoredPrompt",
    "connect",
    "default_store_path",
]


def connect(path: Any = None, **kwargs: Any) -> "Store":
    """Open (or create) a store; see `clipstore.store.connect` for the arguments."""
    from .store import connect as _connect

    return _connect(path, **kwargs)


# Imported on first use: they bring numpy and LanceDB's helpers with them.
_LAZY = {"Store": "store"} | {
    name: "prompts"
    for name in ("DuplicatePrompt", "PromptHit", "PromptInsertReport", "PromptRemoveReport", "RejectedPrompt", "StoredPrompt")
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'clipstore' has no attribute {name!r}")
