"""Typed results returned by the public API. All are frozen dataclasses with `to_dict()` for JSON output."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class _AsDict:
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of this result (nested results become dicts, tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy arrays and scalars, without importing numpy
        value = value.tolist()
    if isinstance(value, float) and value != value:  # NaN ("not measured") is null in JSON
        return None
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


@dataclass(frozen=True)
class FileFailure(_AsDict):
    """A file (or folder) that could not be ingested, and why. Nothing was written for it."""

    path: str
    reason: str


@dataclass(frozen=True)
class IngestReport(_AsDict):
    """What one `Store.ingest` run did.

    added: files whose content was new to the store and got embedded.
    skipped_unchanged: files whose path, size and mtime matched the store (not read at all), or whose
        bytes turned out identical to what the store already had for that path.
    duplicates: files whose bytes are already stored under another path (linked, not re-embedded).
    updated: files whose content changed since the last ingest and were re-embedded.
    pruned: file rows removed because the file disappeared (only with `prune=True`).
    failed: files that could not be ingested, with the reason.
    prompts_found: newly embedded images that carried a prompt (metadata, sidecar caption or manifest).
    prompts_from_earlier_runs: prompts of images stored by earlier runs that had not reached the prompt bank
        (the run was interrupted or crashed before its bank update, the bank update failed, or the store
        predates migration 0005), offered to the bank in this run.
    prompts_inserted: of the prompts offered to the bank in this run (`prompts_found` plus
        `prompts_from_earlier_runs`), how many it kept (the rest were near-duplicates of kept prompts).
    warnings: problems that cost no image but skipped a step (e.g. the prompt bank could not be updated;
        its prompts are then offered again by the next ingest).
    """

    added: int = 0
    skipped_unchanged: int = 0
    duplicates: int = 0
    updated: int = 0
    pruned: int = 0
    failed: tuple[FileFailure, ...] = field(default_factory=tuple)
    prompts_found: int = 0
    prompts_from_earlier_runs: int = 0
    prompts_inserted: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class SearchHit(_AsDict):
    """One search result: the image id (SHA-256 of its bytes), a path it is stored under, and its cosine
    similarity to the query (1.0 = same direction)."""

    id: str
    path: str
    score: float


@dataclass(frozen=True)
class MigrationStatus(_AsDict):
    """One migration and whether (and when, ISO 8601 UTC) it has been applied to the store."""

    name: str
    applied: bool
    applied_at: str | None
    description: str


@dataclass(frozen=True)
class StoreInfo(_AsDict):
    """Where a store lives, what it holds and which model made its vectors."""

    path: str
    images: int
    files: int
    model: dict[str, Any]
    migrations: tuple[MigrationStatus, ...]
    prompts: int = 0
    prompt_dedup_threshold: float | None = None
    index: dict[str, Any] | None = None
    """The current images table's vector index: {"name", "type", "rows_indexed", "rows_not_indexed"}, or None
    when there is none (searches are exact)."""
    index_threshold: int | None = None
    """Rows from which the store's tables get their indexes automatically (on ingest and prompt additions)."""


@dataclass(frozen=True)
class ImageRecord(_AsDict):
    """What the store knows of one image (`Store.image(id)`).

    id: the SHA-256 of its bytes. paths: every path stored with those bytes, sorted (the first is the one
    searches report). width, height: in pixels, as displayed (EXIF orientation applied). format: Pillow's name
    ("PNG", "JPEG", ...). file_size: its bytes (None when no path is stored). prompt, prompt_source: the
    prompt the image carried and where it was read (manifest, png-parameters, ...), or None. added_at: when
    it was first embedded (ISO 8601, UTC), or None.
    """

    id: str
    paths: tuple[str, ...]
    width: int | None
    height: int | None
    format: str | None
    file_size: int | None = None
    prompt: str | None = None
    prompt_source: str | None = None
    added_at: str | None = None
