"""Where a store lives when none is named."""

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
        return expand(os.environ[STORE_ENV])
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


def open_output(path: str | os.PathLike[str]) -> TextIO:
    """`path` opened for writing UTF-8 text (a file a command writes its results to); raises
    NotWritableError, saying why, when it cannot be created."""
    from clipstore.errors import NotWritableError

    try:
        return open(expand(path), "w", encoding="utf-8")
    except OSError as exc:
        raise NotWritableError.from_os_error(f"{expand(path)}", exc, "Choose an output file in a folder you can write to.") from exc
