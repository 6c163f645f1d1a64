"""Where a store lives: the default when none is named, and how a named one is written down (a local folder, or
an object-store URI such as `s3://bucket/photos.clipstore`)."""

from __future__ import annotations

import os
import sys
from typing import TextIO

STORE_ENV = "CLIPSTORE_STORE"


def default_store_path() -> str:
    """The per-user default store: `$CLIPSTORE_STORE` if set, else `<user data dir>/clipstore/default.clipstore`.

    The user data dir is `$XDG_DATA_HOME` or `~/.local/share` on Linux, `~/Library/Application Support` on
    macOS and `%LOCALAPPDATA%` on Windows.
    """
    if os.environ.get(STORE_ENV):
        return store_location(os.environ[STORE_ENV])
    return user_default_store_path()


def user_default_store_path() -> str:
    """`<user data dir>/clipstore/default.clipstore`, whatever `$CLIPSTORE_STORE` says."""
    if sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Application Support")
    elif os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    else:
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "clipstore", "default.clipstore")


def expand(path: str | os.PathLike[str]) -> str:
    """Absolute path with `~` expanded (symlinks are kept: a user's path is what they know it by)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def is_uri(location: "str | os.PathLike[str]") -> bool:
    """True for an object-store URI (`s3://bucket/prefix`, `gs://...`, `az://...`: any scheme but `file`, as
    LanceDB reads them); False for a local path, a `file://` URI and a Windows drive (`C:\\...`)."""
    scheme, separator, _ = os.fspath(location).partition("://")
    return bool(separator) and len(scheme) > 1 and scheme.lower() != "file" and scheme.replace("+", "").isalnum()


def join(folder: str, *names: str) -> str:
    """The path of `names` under `folder`: joined with `/` under an object-store URI, else as the OS does."""
    return "/".join([folder, *names]) if is_uri(folder) else os.path.join(folder, *names)


def store_location(location: "str | os.PathLike[str]") -> str:
    """Where a store is, as clipstore writes it down: an object-store URI as given (less a trailing `/`), a
    local path (or `file://` URI) absolute with `~` expanded."""
    text = os.fspath(location)
    if is_uri(text):
        return text.rstrip("/")
    if text.lower().startswith("file://"):
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        text = url2pathname(urlparse(text).path)
    return expand(text)


def open_output(path: str | os.PathLike[str]) -> TextIO:
    """`path` opened for writing UTF-8 text (a file a command writes its results to); raises
    NotWritableError, saying why, when it cannot be created."""
    from clipstore.errors import NotWritableError

    try:
        return open(expand(path), "w", encoding="utf-8")
    except OSError as exc:
        raise NotWritableError.from_os_error(f"{expand(path)}", exc, "Choose an output file in a folder you can write to.") from exc
