"""Where a store lives: a folder on the local disk, or a prefix on object storage (`s3://bucket/photos.clipstore`,
and the other URIs Lance reads: `gs://`, `az://`, ...) with its storage options.

`StoreLocation` is the one place that knows the difference. It opens the store's LanceDB connection, and it
reads and writes the store's plain files (trained heads under `heads/<id>/`, fine-tuned models under
`models/<id>/`) with the same endpoint, credentials and retry settings as the tables: on object storage through
Lance's own object-store client (`lance.file.LanceFileSession`), which reads the storage options and the standard
environment variables (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, ...) exactly as LanceDB does.

Object storage has no folders and no atomic rename, so a saved folder is uploaded file by file with its
`config.json` last: a folder without one is an upload that did not finish, which listings skip and nothing
records. Files that must be local to be used (a head's or a model's safetensors, loaded by torch) are
downloaded once into clipstore's cache (`local_copy`); they never change under their name (ids are unique).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Iterator, Mapping

from clipstore.db import layout
from clipstore.errors import ClipstoreError, StorageError
from clipstore.paths import is_uri, join

if TYPE_CHECKING:
    import lancedb

BOUNDED_RETRIES = {"client_max_retries": "3", "client_retry_timeout": "30", "connect_timeout": "5s"}
"""Storage options clipstore adds for object storage unless given (or set by Lance's environment variables
OBJECT_STORE_CLIENT_MAX_RETRIES / _RETRY_TIMEOUT): an unreachable endpoint fails within about half a minute
instead of after Lance's default of up to 3 minutes of retries."""


class StoreLocation:
    """A store's place: `root` (an absolute local path, or an object-store URI without a trailing `/`) and the
    `storage_options` for object storage (LanceDB's keys, e.g. `aws_endpoint`, `aws_access_key_id`,
    `allow_http`; ignored for a local folder). `remote` is true on object storage."""

    def __init__(self, root: str, storage_options: Mapping[str, str] | None = None):
        self.root = root
        self.remote = is_uri(root)
        given = {str(key): str(value) for key, value in (storage_options or {}).items()}
        self.storage_options = {**BOUNDED_RETRIES, **given} if self.remote else given
        self._session = None

    def __repr__(self) -> str:
        return f"StoreLocation({self.root!r})"

    def connect(self) -> "lancedb.DBConnection":
        """A LanceDB connection to the store whose reads always see the latest commit."""
        import lancedb

        options = self.storage_options if self.remote else None
        with self.errors():
            return lancedb.connect(self.root, read_consistency_interval=timedelta(0), storage_options=options)

    # --- paths ------------------------------------------------------------------------------------------------

    def join(self, *parts: str) -> str:
        """The path (or URI) of `parts` under the store."""
        return join(self.root, *parts)

    def relative(self, path: str) -> str:
        """`path` (under the store) relative to the store, as records keep it."""
        if is_uri(path):
            return self._key(path)
        return os.path.relpath(path, self.root)

    def _key(self, path: str) -> str:
        prefix = self.root + "/"
        if not path.startswith(prefix):
            raise ValueError(f"{path} is not inside the store at {self.root}")
        return path[len(prefix):]

    # --- files: a path is a local one, or a URI inside this store ----------------------------------------------

    def entries(self, folder: str | None = None) -> list[str]:
        """The names directly under `folder` (default: the store itself), sorted; [] when there is none."""
        folder = folder or self.root
        if not is_uri(folder):
            try:
                return sorted(os.listdir(folder))
            except (FileNotFoundError, NotADirectoryError):
                return []
        key = None if folder == self.root else self._key(folder)
        with self.errors():
            listed = self._files().list_with_delimiter(key)
        return sorted({name.rstrip("/").rpartition("/")[2] for name in (*listed.common_prefixes, *listed.objects)})

    def is_file(self, path: str) -> bool:
        if not is_uri(path):
            return os.path.isfile(path)
        with self.errors():
            return self._files().contains(self._key(path))

    def read_text(self, path: str) -> str:
        """A UTF-8 text file (FileNotFoundError when absent)."""
        if not is_uri(path):
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        if not self.is_file(path):
            raise FileNotFoundError(path)
        with tempfile.TemporaryDirectory(prefix="clipstore-") as scratch:
            local = os.path.join(scratch, "file")
            with self.errors():
                self._files().download_file(self._key(path), local)
            with open(local, encoding="utf-8") as handle:
                return handle.read()

    def local_copy(self, path: str) -> str:
        """A local path to read file `path` from: a local file itself; one on object storage copied into
        clipstore's cache on first use (files under a store's heads and models never change once saved)."""
        if not is_uri(path):
            return path
        from clipstore.encoders.tower_cache import cache_root

        digest = hashlib.sha256(f"{self.root}\0{self._key(path)}".encode()).hexdigest()[:32]
        local = os.path.join(cache_root(), "store-files", digest, os.path.basename(path))
        if not os.path.isfile(local):
            os.makedirs(os.path.dirname(local), exist_ok=True)
            partial = f"{local}.{os.getpid()}.partial"
            with self.errors():
                self._files().download_file(self._key(path), partial)
            os.replace(partial, local)  # whole or absent
        return local

    @contextmanager
    def saved_folder(self, final: str) -> Iterator[str]:
        """Save a folder of the store (`final`) whole or not at all: the body writes its files into the local
        folder it is given. On a local disk that is `<final>.partial`, renamed to `final` when the body returns
        (a crash leaves only the `.partial` folder, which listings skip). On object storage it is a scratch
        folder whose files are uploaded when the body returns, `config.json` last."""
        if not is_uri(final):
            partial = final + ".partial"
            os.makedirs(partial, exist_ok=True)
            yield partial
            os.replace(partial, final)
            return
        scratch = tempfile.mkdtemp(prefix="clipstore-upload-")
        try:
            yield scratch
            names = sorted(os.listdir(scratch), key=lambda name: (name == layout.CONFIG_FILE, name))
            with self.errors():
                for name in names:
                    self._files().upload_file(os.path.join(scratch, name), self._key(f"{final}/{name}"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def work_folder(self, *parts: str) -> str:
        """A local folder for a training run's resumable checkpoints (`parts` under the store, e.g. `heads`,
        `.training-<key>`), created: inside the store folder on a local disk; in clipstore's cache for a store
        on object storage (a run resumes on the machine that started it)."""
        if self.remote:
            from clipstore.encoders.tower_cache import cache_root

            digest = hashlib.sha256(self.root.encode()).hexdigest()[:16]
            folder = os.path.join(cache_root(), "store-work", digest, *parts)
        else:
            folder = os.path.join(self.root, *parts)
        os.makedirs(folder, exist_ok=True)
        return folder

    def _files(self):
        if self._session is None:
            from lance.file import LanceFileSession

            with self.errors():
                self._session = LanceFileSession(self.root, storage_options=self.storage_options)
        return self._session

    # --- errors -----------------------------------------------------------------------------------------------

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Failures of object storage (a missing bucket, refused credentials, an unreachable endpoint) as one
        `StorageError` saying what to check; nothing changes for a local folder."""
        if not self.remote:
            yield
            return
        try:
            yield
        except ClipstoreError:
            raise
        except (OSError, RuntimeError, ValueError) as exc:
            if isinstance(exc, FileNotFoundError) and not _looks_like_storage_failure(str(exc)):
                raise
            raise storage_error(self.root, exc) from exc


_NO_BUCKET = re.compile(r"NoSuchBucket|bucket does not exist|ContainerNotFound|bucket.{0,40}not (?:be )?found", re.I)
_REFUSED = re.compile(r"InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|Forbidden|Unauthori[sz]ed|credential", re.I)
_UNREACHABLE = re.compile(
    r"error sending request|connection refused|dns error|failed to lookup|timed out|tcp connect|"
    r"connect error|Connection reset|builder error|HTTP not allowed|URL scheme is not allowed",
    re.I,
)


def _looks_like_storage_failure(text: str) -> bool:
    return any(pattern.search(text) for pattern in (_NO_BUCKET, _REFUSED, _UNREACHABLE))


def storage_error(root: str, exc: BaseException) -> StorageError:
    """What went wrong talking to the object storage of the store at `root`, said in one line with what to do."""
    detail = " ".join(str(exc).split())
    short = detail if len(detail) <= 300 else detail[:297] + "..."
    scheme = root.partition("://")[0].lower()
    aws = scheme.startswith("s3")
    if _NO_BUCKET.search(detail):
        what = (
            f"The bucket of {root} does not exist (or these credentials cannot see it). Create the bucket, or "
            "check the URI and the endpoint"
        )
    elif _REFUSED.search(detail):
        keys = (
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or --storage-option aws_access_key_id=... and "
            "aws_secret_access_key=...)" if aws else "the credentials in the storage options"
        )
        what = f"The object storage of {root} refused the request: check {keys}, and the region"
    elif _UNREACHABLE.search(detail):
        endpoint = "AWS_ENDPOINT (or --storage-option aws_endpoint=URL)" if aws else "the endpoint in the storage options"
        what = (
            f"Cannot reach the object storage of {root}: check {endpoint}, that the server is up, and "
            "allow_http=true for an http:// endpoint"
        )
    else:
        what = f"The object storage of {root} failed a request"
    return StorageError(f"{what}. ({type(exc).__name__}: {short})")
