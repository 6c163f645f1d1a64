"""The values of an app's image column — local paths, `file://` URIs or image bytes — as decoded images, or the
reason why not.

Both the "clipstore" embedding function and `describe` read image columns through `load_source`, so a value
that one of them can read the other can too, and their failure reasons are the same words. Decoding itself is
`clipstore.imaging` (format sniffing, the decompression-bomb guard, EXIF orientation, colour modes).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar
from urllib.parse import urlparse
from urllib.request import url2pathname

from clipstore.errors import InvalidImageError

if TYPE_CHECKING:
    from clipstore.imaging import DecodedImage

T = TypeVar("T")

NULL_IMAGE = "no image (the value is null)"


def load_source(value: Any, *, min_side: int | None = None) -> "DecodedImage":
    """One image column value -> a decoded RGB image; InvalidImageError(reason) when it cannot be read.

    value: bytes (the image file's bytes), a local path (relative paths are relative to the working directory,
    `~` is expanded), a `file://` URI, an `os.PathLike`, or a PIL image (queries). Other URI schemes
    (`http://`, `s3://`, ...) are refused with a reason: clipstore reads no remote images here. `min_side` lets
    large JPEGs decode at a reduced scale (see `clipstore.imaging.decode_image`).
    """
    from clipstore.imaging import load_image

    if value is None:
        raise InvalidImageError(NULL_IMAGE)
    if isinstance(value, str):
        value = _local_path(value)
    try:
        return load_image(value, min_side=min_side)
    except TypeError as exc:
        raise InvalidImageError(
            f"not an image value ({type(value).__name__}): an image column holds paths, file:// URIs or bytes"
        ) from exc


def describe_value(value: Any) -> str:
    """A short name of an image column value for messages: the path or URI, or `<N bytes>`."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    return str(value)


def map_in_threads(function: Callable[[Any], T], values: Sequence[Any], workers: int | None = None) -> list[T]:
    """`[function(v) for v in values]`, run in a few worker threads (reading and decoding release the GIL)."""
    if len(values) <= 1:
        return [function(value) for value in values]
    workers = workers or max(1, min(4, os.cpu_count() or 1, len(values)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clipstore-lancedb") as pool:
        return list(pool.map(function, values))


def _local_path(value: str) -> str:
    if not value.strip():
        raise InvalidImageError("no image (the path is empty)")
    if "://" not in value:
        return value
    parsed = urlparse(value)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InvalidImageError(f"cannot read {value}: a file:// URI must name a local file (file:///path)")
        return url2pathname(parsed.path)
    raise InvalidImageError(
        f"cannot read {value}: clipstore reads local paths, file:// URIs and image bytes, not {parsed.scheme}:// URIs"
    )
