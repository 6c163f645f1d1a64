"""Finding image files under a folder.

The walk follows symlinks (photo libraries often link folders in) but visits every real directory once, so a
symlink loop ends the walk instead of recursing forever. Unreadable folders and files are reported, not fatal.
Hidden entries (names starting with ".") are skipped: they hold thumbnails caches, VCS data and stores.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from clipstore.imaging import IMAGE_EXTENSIONS, sniff_image_format
from clipstore.results import FileFailure

_SNIFF_BYTES = 32


@dataclass(frozen=True)
class FoundFile:
    """A file that is (or claims to be) an image: absolute path, size in bytes, mtime in nanoseconds."""

    path: str
    size: int
    mtime_ns: int


def walk_images(root: str | os.PathLike[str], *, exclude: tuple[str, ...] = ()) -> Iterator[FoundFile | FileFailure]:
    """Yield every candidate image file under `root` (depth-first, sorted by name), and failures.

    A candidate is a file with an image extension (its content is checked later, at decode time) or a file
    without one whose first bytes are an image signature. Other files are ignored silently. `exclude` holds
    absolute directory paths never entered (e.g. the store itself when it lives inside the folder).
    """
    root_path = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if os.path.isfile(root_path):
        yield from _candidate(root_path, explicit=True)
        return
    excluded = {os.path.realpath(path) for path in exclude}
    visited: set[tuple[int, int]] = set()
    stack = [root_path]
    while stack:
        folder = stack.pop()
        try:
            info = os.stat(folder)
        except OSError as exc:
            yield FileFailure(printable_path(folder), f"cannot read folder: {exc.strerror or exc}")
            continue
        key = (info.st_dev, info.st_ino)
        if key in visited or os.path.realpath(folder) in excluded:
            continue  # a symlink loop or a second link to a folder already walked
        visited.add(key)
        try:
            with os.scandir(folder) as entries:
                children = sorted(entries, key=lambda entry: entry.name)
        except OSError as exc:
            yield FileFailure(printable_path(folder), f"cannot read folder: {exc.strerror or exc}")
            continue
        subfolders = []
        for entry in children:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                subfolders.append(entry.path)
            else:
                yield from _candidate(entry.path, explicit=False)
        stack.extend(reversed(subfolders))


def printable_path(path: str) -> str:
    """`path` as valid Unicode: bytes that are not UTF-8 (surrogate-escaped by Python) become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _candidate(path: str, *, explicit: bool) -> Iterator[FoundFile | FileFailure]:
    if printable_path(path) != path:
        # The tables store paths as UTF-8 strings; a name in another encoding cannot be recorded faithfully.
        if explicit or Path(path).suffix.lower() in IMAGE_EXTENSIONS:
            yield FileFailure(printable_path(path), "file name is not valid UTF-8: rename the file to ingest it")
        return
    try:
        info = os.stat(path)
    except OSError as exc:
        if os.path.islink(path):
            yield FileFailure(path, f"broken symlink: {exc.strerror or exc}")
        else:
            yield FileFailure(path, f"cannot read file: {exc.strerror or exc}")
        return
    if not stat.S_ISREG(info.st_mode):
        return  # sockets, fifos, devices
    found = FoundFile(path, info.st_size, info.st_mtime_ns)
    if explicit or Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        yield found
        return
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError:
        return  # not claimed to be an image and unreadable: nothing the user expects us to ingest
    if sniff_image_format(head) is not None:
        yield found
