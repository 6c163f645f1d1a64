"""The clipstore error hierarchy.

Every error a user can cause (a missing folder, a bad model spec, a store made by another model) is a
`ClipstoreError` whose message says what happened and what to do next. The CLI prints that message as one
line and exits 1; Python callers can catch the specific subclass.
"""

from __future__ import annotations


class ClipstoreError(Exception):
    """Base class of every error clipstore raises on purpose."""


class StoreNotFoundError(ClipstoreError):
    """The store path does not hold a clipstore store and creating one was not allowed."""


class StoreDamagedError(ClipstoreError):
    """The store folder lacks tables its migrations created (e.g. a `.lance` folder was deleted)."""


class ManifestError(ClipstoreError):
    """A manifest (CSV/TSV/JSONL of paths with prompts or labels) cannot be parsed; says which file and line."""


class StoreVersionError(ClipstoreError):
    """The store was written by a newer clipstore (it has migrations this version does not know)."""


class ModelSpecError(ClipstoreError):
    """A `--model` value cannot be understood (unknown architecture, missing checkpoint file, ...)."""


class ModelUnavailableError(ClipstoreError):
    """The model's weights cannot be loaded (offline, corrupt checkpoint, missing package)."""


class ModelMismatchError(ClipstoreError):
    """The store's vectors were made by a different model than the one requested."""


class ReembedError(ClipstoreError):
    """A re-embed cannot finish (e.g. image files are missing) or there is nothing to roll back to."""


class SourceNotFoundError(ClipstoreError):
    """A folder or file given to ingest/search does not exist or cannot be read."""


class PromptSelectionError(ClipstoreError):
    """Prompts to remove cannot be told apart: no selector, an empty match text, an unknown or ambiguous id."""


class PromptFileError(ClipstoreError):
    """A prompt file is not text in one of the formats read (an image, a binary file, undecodable text, a
    Parquet file under another name), or it has no prompt column."""


class InvalidImageError(ClipstoreError):
    """Bytes that should be an image are not a decodable, acceptable image."""


class HeadNotFoundError(ClipstoreError):
    """A named Model A head does not exist in the store (or a head folder is incomplete)."""


class TrainingDataError(ClipstoreError):
    """The store does not hold enough (image, prompt) pairs to train or evaluate on."""


class NothingToDescribeWithError(ClipstoreError):
    """The store has neither prompts in its bank nor a trained Model A."""


class IndexBuildError(ClipstoreError):
    """A vector index cannot be built (e.g. the store holds no images yet)."""


class InvalidOptionError(ClipstoreError, ValueError):
    """An option value is out of range or malformed (a precision, a template, a split, ...). Also a ValueError,
    as these were before they had their own class."""


class StorageError(ClipstoreError):
    """The object storage a store lives on cannot be used: a missing bucket, refused credentials, an unreachable
    endpoint (the message says which, and what to check)."""


class WriteLeaseLostError(ClipstoreError):
    """A writer to a store on object storage lost its write lease before it finished (it could not renew it in
    time, e.g. while suspended), so another writer may have written at the same time."""


class NotWritableError(ClipstoreError):
    """A store, output file or output folder cannot be created or written (read-only disk, a file in the
    way, no permission, a full disk)."""

    @classmethod
    def from_os_error(cls, what: str, exc: OSError, advice: str) -> "NotWritableError":
        """`what` cannot be written because of `exc`; `advice` says what to do."""
        reason = exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in what else ""
        return cls(f"Cannot write {what}: {reason}{where}. {advice}")


class ServeError(ClipstoreError):
    """`clipstore serve` cannot start: its optional dependencies are not installed (`pip install
    'clipstore[serve]'`), or the address cannot be listened on (in use, not this machine's)."""


class DistributedError(ClipstoreError):
    """A distributed ingest cannot run: the distributed extra (Ray Data) is not installed, or the Ray cluster
    cannot be reached (the message says which, and what to do)."""
