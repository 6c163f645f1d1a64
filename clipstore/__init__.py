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
    InvalidImageError,
    ManifestError,
    ModelMismatchError,
    ModelSpecError,
    ModelUnavailableError,
    NothingToDescribeWithError,
    PromptFileError,
    PromptSelectionError,
    ReembedError,
    SourceNotFoundError,
    StoreDamagedError,
    StoreNotFoundError,
    StoreVersionError,
    TrainingDataError,
)
from .paths import default_store_path
from .results import FileFailure, IngestReport, MigrationStatus, SearchHit, StoreInfo

# Imported on first use (PEP 562 `__getattr__` below): these modules bring numpy, LanceDB's helpers or torch.
_LAZY_MODULES = {
    "store": ("Store",),
    "models": ("ModelIdentity",),
    "ingest": ("IngestOptions",),
    "prompts": ("DuplicatePrompt", "PromptHit", "PromptInsertReport", "PromptRemoveReport", "RejectedPrompt", "StoredPrompt"),
    "knn": ("KnnParams",),
    "training": ("EpochStats", "TrainOptions", "TrainReport"),
    "heads": ("HeadInfo",),
    "describe": ("DescribedFile", "Describer", "Description"),
    "evaluation": ("EvalReport", "EvalRow"),
    "finetune": ("FinetuneEpoch", "FinetuneOptions", "FinetuneReport"),
    "reembed": ("ReembedReport", "RollbackReport"),
    "retrieval_eval": ("RetrievalReport", "RetrievalRow"),
    "locations": ("RelinkReport",),
    "demo": ("DemoResult", "DemoSearch"),
    "encoders.clip": ("ClipEncoder",),
    "encoders.minilm": ("MiniLMEncoder",),
}
_LAZY = {name: module for module, names in _LAZY_MODULES.items() for name in names}

if TYPE_CHECKING:
    from .demo import DemoResult, DemoSearch
    from .describe import DescribedFile, Describer, Description
    from .encoders.clip import ClipEncoder
    from .encoders.minilm import MiniLMEncoder
    from .evaluation import EvalReport, EvalRow
    from .finetune import FinetuneEpoch, FinetuneOptions, FinetuneReport
    from .heads import HeadInfo
    from .ingest import IngestOptions
    from .knn import KnnParams
    from .locations import RelinkReport
    from .models import ModelIdentity
    from .prompts import DuplicatePrompt, PromptHit, PromptInsertReport, PromptRemoveReport, RejectedPrompt, StoredPrompt
    from .reembed import ReembedReport, RollbackReport
    from .retrieval_eval import RetrievalReport, RetrievalRow
    from .store import Store
    from .training import EpochStats, TrainOptions, TrainReport

__version__ = "0.1.0"

__all__ = sorted(
    [
        "ClipstoreError",
        "HeadNotFoundError",
        "InvalidImageError",
        "ManifestError",
        "ModelMismatchError",
        "ModelSpecError",
        "ModelUnavailableError",
        "NothingToDescribeWithError",
        "PromptFileError",
        "PromptSelectionError",
        "ReembedError",
        "SourceNotFoundError",
        "StoreDamagedError",
        "StoreNotFoundError",
        "StoreVersionError",
        "TrainingDataError",
        "FileFailure",
        "IngestReport",
        "MigrationStatus",
        "SearchHit",
        "StoreInfo",
        "connect",
        "default_store_path",
        *_LAZY,
    ]
)


def connect(path: Any = None, **kwargs: Any) -> "Store":
    """Open (or create) a store; see `clipstore.store.connect` for the arguments."""
    from .store import connect as _connect

    return _connect(path, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'clipstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
