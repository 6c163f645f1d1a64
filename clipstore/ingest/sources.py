"""Where ingest reads images from: a local folder (or one file), or a prefix on object storage
(`s3://bucket/photos`).

Both give ingest the same four things: the candidate image files in walk order with their size and modification
time (what the incremental check compares with the `files` table) and the failures met on the way; the bytes of
one file; whether a path still exists (`--prune`); and a caption file beside an image (`name.txt`). A file on
object storage is named by its URI (`s3://bucket/photos/cats/tom.jpg`): that is the path the files table records.

Walk order is the local walk's (`clipstore.ingest.walk`): depth-first, names sorted, a folder's files before its
subfolders, hidden entries (`.name`) skipped. An object-store prefix is listed in one pass, or in shards (one per
first-level "folder") that a distributed ingest lists in parallel (`shards`, `walk_shard`); sorting by
`walk_order_key` puts the merged listing in walk order. Object storage is reached with the store's storage
options when the store lives on the same kind of storage, and with the standard environment variables
(`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`) as Lance reads them.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Iterator, Mapping

from clipstore.errors import InvalidOptionError, SourceNotFoundError
from clipstore.imaging import IMAGE_EXTENSIONS, sniff_image_format
from clipstore.ingest.walk import FoundFile, walk_images
from clipstore.paths import expand, is_uri
from clipstore.prompts.image_prompts import CAPTION_CHARS, ImagePrompt, caption_prompt, prompt_from_sidecar
from clipstore.results import FileFailure

if TYPE_CHECKING:
    import pyarrow.fs

_SNIFF_BYTES = 32


class LocalFolder:
    """A folder (or one file) on this machine's disk. `exclude`: absolute folders never entered (the store)."""

    remote = False

    def __init__(self, root: str | os.PathLike[str], exclude: tuple[str, ...] = ()):
        self.root = expand(root)
        self.exclude = tuple(exclude)

    def __repr__(self) -> str:
        return f"LocalFolder({self.root!r})"

    def exists(self, path: str | None = None) -> bool:
        return os.path.exists(self.root if path is None else path)

    def walk(self) -> Iterator[FoundFile | FileFailure]:
        """Candidate image files and failures, in walk order."""
        if os.path.exists(self.root):
            yield from walk_images(self.root, exclude=self.exclude)

    def shards(self) -> list[str]:
        """One shard, the whole folder: a walk keeps one set of visited folders, so that a symlink loop ends and
        a folder linked twice is walked once; two walks could not share it."""
        return [self.root]

    def walk_shard(self, shard: str) -> Iterator[FoundFile | FileFailure]:
        return self.walk()

    def read(self, found: FoundFile) -> tuple[bytes, FoundFile]:
        """The file's bytes, and its size and mtime as read (the file may have changed since the walk).
        OSError when it cannot be read."""
        with open(found.path, "rb") as handle:
            data = handle.read()
            info = os.fstat(handle.fileno())
        return data, FoundFile(found.path, info.st_size, info.st_mtime_ns)

    def sidecar_prompt(self, path: str) -> ImagePrompt | None:
        return prompt_from_sidecar(path)

    def is_under(self, path: str, root: str | None = None) -> bool:
        root = self.root if root is None else root
        return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class ObjectPrefix:
    """Every object under a prefix of object storage (`s3://bucket/photos`), or one object. `exclude`: URIs of
    prefixes never listed (the store, when it lives under the prefix). Only `s3://` (and S3-compatible servers:
    MinIO, moto, ...) is read for now."""

    remote = True

    def __init__(self, uri: str, storage_options: Mapping[str, str] | None = None, exclude: tuple[str, ...] = ()):
        self.root = uri.rstrip("/")
        scheme, _, rest = self.root.partition("://")
        if scheme.lower() not in ("s3", "s3a"):
            raise InvalidOptionError(
                f"Cannot read images from {uri}: clipstore reads images from local folders and s3:// prefixes "
                "(S3 and S3-compatible servers). Copy the images to one of those, or mount the storage as a folder."
            )
        self._scheme = scheme
        self._key = rest  # bucket/prefix, as pyarrow names objects
        self.storage_options = s3_options(storage_options)
        self.exclude = tuple(item.rstrip("/") for item in exclude if is_uri(item))
        self._fs: "pyarrow.fs.S3FileSystem | None" = None

    def __repr__(self) -> str:
        return f"ObjectPrefix({self.root!r})"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fs": None}  # sent to Ray workers: each opens its own client

    @property
    def fs(self) -> "pyarrow.fs.S3FileSystem":
        if self._fs is None:
            self._fs = s3_filesystem(self.storage_options)
        return self._fs

    def uri(self, key: str) -> str:
        return f"{self._scheme}://{key}"

    def exists(self, path: str | None = None) -> bool:
        """Whether the object (default: the source itself, an object or a prefix holding any) exists."""
        import pyarrow.fs as pafs

        key = self._key if path is None else path.partition("://")[2]
        with self.errors():
            info = self.fs.get_file_info(key)
            if info.type == pafs.FileType.File:
                return True
            if path is not None and path != self.root:
                return False
            if "/" not in key.strip("/"):  # a bucket: it exists when it can be listed
                return info.type == pafs.FileType.Directory
            listed = self.fs.get_file_info(pafs.FileSelector(key, allow_not_found=True, recursive=False))
            return bool(listed)

    def walk(self) -> Iterator[FoundFile | FileFailure]:
        """Candidate image objects and failures, in walk order (one listing of the whole prefix)."""
        found = list(self._list(self._key, recursive=True, top=True))
        yield from sorted(found, key=lambda item: walk_order_key(item.path, self.root))

    def shards(self) -> list[str]:
        """The prefix's first level: "" (the objects directly under it) and each first-level folder's key."""
        import pyarrow.fs as pafs

        with self.errors():
            info = self.fs.get_file_info(self._key)
            if info.type == pafs.FileType.File:
                return [""]
            entries = self.fs.get_file_info(pafs.FileSelector(self._key, allow_not_found=True, recursive=False))
        folders = sorted(
            entry.path for entry in entries
            if entry.type == pafs.FileType.Directory and not entry.base_name.startswith(".") and not self._excluded(entry.path)
        )
        return ["", *folders]

    def walk_shard(self, shard: str) -> Iterator[FoundFile | FileFailure]:
        """The candidates of one shard (unsorted: the caller sorts the merged listing by `walk_order_key`)."""
        if shard == "":
            yield from self._list(self._key, recursive=False, top=True)
        else:
            yield from self._list(shard, recursive=True, top=False)

    def _list(self, key: str, *, recursive: bool, top: bool) -> Iterator[FoundFile | FileFailure]:
        import pyarrow.fs as pafs

        with self.errors():
            info = self.fs.get_file_info(key)
            if top and info.type == pafs.FileType.File:  # one object, named explicitly
                yield FoundFile(self.uri(info.path), info.size, info.mtime_ns or 0)
                return
            entries = self.fs.get_file_info(pafs.FileSelector(key, allow_not_found=True, recursive=recursive))
            for entry in entries:
                if entry.type != pafs.FileType.File or self._hidden(entry.path) or self._excluded(entry.path):
                    continue
                found = FoundFile(self.uri(entry.path), entry.size, entry.mtime_ns or 0)
                if PurePosixPath(entry.path).suffix.lower() in IMAGE_EXTENSIONS or self._looks_like_image(entry.path):
                    yield found

    def _hidden(self, key: str) -> bool:
        relative = key[len(self._key):].strip("/")
        return any(part.startswith(".") for part in relative.split("/"))

    def _excluded(self, key: str) -> bool:
        uri = self.uri(key)
        return any(uri == item or uri.startswith(item + "/") for item in self.exclude)

    def _looks_like_image(self, key: str) -> bool:
        """An object without an image extension is a candidate when its first bytes are an image signature."""
        try:
            with self.fs.open_input_file(key) as handle:
                head = handle.read(_SNIFF_BYTES)
        except OSError:
            return False  # not claimed to be an image and unreadable: nothing the user expects us to ingest
        return sniff_image_format(head) is not None

    def read(self, found: FoundFile) -> tuple[bytes, FoundFile]:
        """The object's bytes, and its size and mtime (from the listing unless the object changed since).
        OSError when it cannot be read."""
        key = found.path.partition("://")[2]
        with self.fs.open_input_stream(key) as handle:
            data = handle.read()
        if len(data) != found.size:  # rewritten since it was listed: record what was read
            info = self.fs.get_file_info(key)
            found = FoundFile(found.path, len(data), info.mtime_ns or 0)
        return data, found

    def sidecar_prompt(self, path: str) -> ImagePrompt | None:
        key = os.path.splitext(path.partition("://")[2])[0] + ".txt"
        try:
            with self.fs.open_input_stream(key) as handle:
                text = handle.read(4 * CAPTION_CHARS).decode("utf-8", errors="replace")
        except OSError:
            return None
        return caption_prompt(text)

    def is_under(self, path: str, root: str | None = None) -> bool:
        root = self.root if root is None else root
        return path == root or path.startswith(root.rstrip("/") + "/")

    def errors(self):
        """Object-storage failures as one `StorageError` naming the source and what to check."""
        from clipstore.db.location import StoreLocation

        return StoreLocation(self.root, self.storage_options).errors()


def walk_order_key(path: str, root: str) -> tuple:
    """Sort key putting paths under `root` in walk order: depth-first, names sorted, a folder's files before its
    subfolders (as `walk_images` meets them)."""
    parts = path[len(root):].strip("/").split("/")
    return (*((1, part) for part in parts[:-1]), (0, parts[-1]))


def open_source(
    location: str | os.PathLike[str],
    *,
    exclude: tuple[str, ...] = (),
    storage_options: Mapping[str, str] | None = None,
) -> "LocalFolder | ObjectPrefix":
    """The source at `location`: an object-store URI or a local path (`~` expanded)."""
    text = os.fspath(location)
    if is_uri(text):
        return ObjectPrefix(text, storage_options, exclude)
    return LocalFolder(text, exclude)


def check_source_exists(source: "LocalFolder | ObjectPrefix", *, prune: bool = False) -> None:
    """SourceNotFoundError when the source does not exist (a missing folder is allowed when pruning: the rows of
    a deleted folder can then be removed)."""
    if prune or source.exists():
        return
    if source.remote:
        raise SourceNotFoundError(
            f"Cannot ingest {source.root}: no object there and none under it. Check the URI, and the endpoint and "
            "credentials (AWS_ENDPOINT, AWS_ACCESS_KEY_ID, ...)."
        )
    raise SourceNotFoundError(f"Cannot ingest {source.root}: no such file or folder. Check the path.")


_S3_OPTIONS = {
    "aws_endpoint": ("aws_endpoint", "aws_endpoint_url", "endpoint"),
    "aws_access_key_id": ("aws_access_key_id", "access_key_id"),
    "aws_secret_access_key": ("aws_secret_access_key", "secret_access_key"),
    "aws_session_token": ("aws_session_token", "session_token"),
    "aws_region": ("aws_region", "region", "aws_default_region"),
}


def s3_options(storage_options: Mapping[str, str] | None = None) -> dict[str, str]:
    """The S3 options a source is read with: LanceDB's storage option keys (`aws_endpoint`, `aws_access_key_id`,
    `aws_secret_access_key`, `aws_session_token`, `aws_region`) as given, else from the environment variables
    Lance reads (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, ...). Resolved once, where the ingest starts: workers on
    other machines read with the same endpoint and credentials, whatever their own environment holds."""
    given = {key.lower(): str(value) for key, value in (storage_options or {}).items()}
    resolved = {}
    for key, names in _S3_OPTIONS.items():
        for name in names:
            value = given.get(name) or os.environ.get(name.upper())
            if value:
                resolved[key] = value
                break
    return resolved


def s3_filesystem(options: Mapping[str, str]) -> "pyarrow.fs.S3FileSystem":
    """A pyarrow S3 client for `s3_options`: the endpoint (http:// or https://), the credentials when given (else
    pyarrow's own chain: instance profiles, ~/.aws), the region (default us-east-1)."""
    from pyarrow import fs as pafs

    kwargs: dict = {"region": options.get("aws_region") or "us-east-1", "connect_timeout": 5, "request_timeout": 30}
    if options.get("aws_access_key_id"):
        kwargs.update(access_key=options["aws_access_key_id"], secret_key=options.get("aws_secret_access_key", ""))
        if options.get("aws_session_token"):
            kwargs["session_token"] = options["aws_session_token"]
    endpoint = options.get("aws_endpoint")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    return pafs.S3FileSystem(**kwargs)
