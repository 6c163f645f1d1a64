"""clipstore: an embedded LanceDB store that turns folders of images into a searchable store.

    import clipstore
    store = clipstore.connect("~/my.clipstore")
    store.ingest("~/photos")
    store.search_text("a dog on a beach", k=10)

Heavy dependencies (torch, open_clip, lancedb) are imported only when first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clipstore.errors import (
    ClipstoreError,
    DistributedError,
    HeadNotFoundError,
    IndexBuildError,
    InvalidImageError,
    InvalidOptionError,
    ManifestError,
    ModelMismatchError,
    ModelSpecError,
    ModelUnavailableError,
    NothingToDescribeWithError,
    NotWritableError,
    PromptFileError,
    PromptSelectionError,
    ReembedError,
    ServeError,
    SourceNotFoundError,
    StorageError,
    StoreDamagedError,
    StoreNotFoundError,
    StoreVersionError,
    TrainingDataError,
    WriteLeaseLostError,
)
from clipstore.paths import default_store_path
from clipstore.results import FileFailure, ImageRecord, IngestReport, MigrationStatus, SearchHit, StoreInfo

# Imported on first use (PEP 562 `__getattr__` below): these modules bring numpy, LanceDB's helpers or torch.
_LAZY_MODULES = {
    "store.facade": ("Store",),
    "encoders.identity": ("ModelIdentity",),
    "ingest.run": ("IngestOptions",),
    "ingest.distributed": ("RayOptions",),
    "db.fragments": ("GcReport", "GcTable"),
    "prompts.bank": ("DuplicatePrompt", "PromptHit", "PromptInsertReport", "PromptRemoveReport", "RejectedPrompt", "StoredPrompt"),
    "describe.model_b": ("KnnChoice", "KnnParams"),
    "describe.options": ("TrainOptions",),
    "describe.train": ("TrainReport",),
    "training.loop": ("EpochStats",),
    "describe.heads": ("HeadInfo",),
    "describe.describer": ("DescribedFile", "Describer", "Description"),
    "describe.evaluate": ("EvalReport", "EvalRow"),
    "finetune.options": ("FinetuneOptions",),
    "finetune.run": ("FinetuneEpoch", "FinetuneReport"),
    "switch.reembed": ("ReembedReport",),
    "switch.rollback": ("RollbackReport",),
    "finetune.retrieval": ("RetrievalReport", "RetrievalRow"),
    "switch.locations": ("RelinkReport",),
    "search.index": ("IndexReport",),
    "demo": ("DemoResult", "DemoSearch"),
    "encoders.clip": ("ClipEncoder",),
    "encoders.minilm": ("MiniLMEncoder",),
    "lancedb.describe_rows": ("TableDescribeReport",),
    "serve.options": ("ServeOptions",),
}
_LAZY = {name: module for module, names in _LAZY_MODULES.items() for name in names}

if TYPE_CHECKING:
    from clipstore.demo import DemoResult, DemoSearch
    from clipstore.describe.describer import DescribedFile, Describer, Description
    from clipstore.encoders.clip import ClipEncoder
    from clipstore.encoders.minilm import MiniLMEncoder
    from clipstore.describe.evaluate import EvalReport, EvalRow
    from clipstore.finetune.options import FinetuneOptions
    from clipstore.finetune.run import FinetuneEpoch, FinetuneReport
    from clipstore.describe.heads import HeadInfo
    from clipstore.ingest.run import IngestOptions
    from clipstore.ingest.distributed import RayOptions
    from clipstore.db.fragments import GcReport, GcTable
    from clipstore.lancedb.describe_rows import TableDescribeReport
    from clipstore.serve.options import ServeOptions
    from clipstore.describe.model_b import KnnChoice, KnnParams
    from clipstore.switch.locations import RelinkReport
    from clipstore.search.index import IndexReport
    from clipstore.encoders.identity import ModelIdentity
    from clipstore.prompts.bank import DuplicatePrompt, PromptHit, PromptInsertReport, PromptRemoveReport, RejectedPrompt, StoredPrompt
    from clipstore.switch.reembed import ReembedReport
    from clipstore.switch.rollback import RollbackReport
    from clipstore.finetune.retrieval import RetrievalReport, RetrievalRow
    from clipstore.store.facade import Store
    from clipstore.describe.options import TrainOptions
    from clipstore.describe.train import TrainReport
    from clipstore.training.loop import EpochStats

__version__ = "0.1.0"

__all__ = sorted(
    [
        "ClipstoreError",
        "DistributedError",
        "HeadNotFoundError",
        "IndexBuildError",
        "InvalidImageError",
        "InvalidOptionError",
        "ManifestError",
        "ModelMismatchError",
        "ModelSpecError",
        "ModelUnavailableError",
        "NothingToDescribeWithError",
        "NotWritableError",
        "PromptFileError",
        "PromptSelectionError",
        "ReembedError",
        "ServeError",
        "SourceNotFoundError",
        "StorageError",
        "StoreDamagedError",
        "StoreNotFoundError",
        "StoreVersionError",
        "TrainingDataError",
        "WriteLeaseLostError",
        "FileFailure",
        "ImageRecord",
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
    from clipstore.store.facade import connect as _connect

    return _connect(path, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'clipstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
