"""Image bytes for the page, by image id only: the store's paths of that id, read and checked against the id (the
SHA-256 of the bytes the store embedded), and JPEG renditions (thumbnails, previews) decoded with the ingest's
safeguards (`clipstore.imaging`: format by content, the megapixel guard, EXIF orientation) and cached on disk
under their content's id.

No path ever comes from a request: an id that is not 64 hex digits, or that the store does not hold, is
`ImageUnavailable` (404); a stored file whose bytes changed since ingest is not served either (410).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipstore.imaging import load_image, sniff_image_format

if TYPE_CHECKING:
    from clipstore.store.facade import Store

IMAGE_ID = re.compile(r"[0-9a-f]{64}")
RENDITIONS = {"thumb": 256, "preview": 1024}
"""The JPEG renditions the page shows: the longer side in pixels."""
JPEG_QUALITY = 85
CACHE_FOLDER = "thumbnails-v1"  # bump when a rendition's size or encoding changes
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "WEBP": "image/webp",
    "HEIF": "image/heif",
}


class ImageUnavailable(Exception):
    """An image id the page cannot show: `status` 404 (no such image) or 410 (its files changed or went away),
    and why, in words."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StoredBytes:
    """A stored image's bytes as the store embedded them, the path they were read from, and their media type."""

    data: bytes
    path: str
    media_type: str


class ImageFiles:
    """Reads a store's images by id and keeps their JPEG renditions in `cache_folder`."""

    def __init__(self, store: "Store", cache_folder: str, max_megapixels: float):
        self.store = store
        self.cache_folder = cache_folder
        self.max_megapixels = max_megapixels

    def read(self, image_id: str) -> StoredBytes:
        """The bytes of `image_id` from the first of its stored paths that still holds exactly them."""
        paths = self.store.image_paths(checked_id(image_id))
        if not paths:
            raise ImageUnavailable(404, f"This store has no image with id {image_id}.")
        for path in paths:
            try:
                with open(path, "rb") as file:
                    data = file.read()
            except OSError:
                continue
            if hashlib.sha256(data).hexdigest() == image_id:
                media_type = MEDIA_TYPES.get(sniff_image_format(data[:32]) or "", "application/octet-stream")
                return StoredBytes(data, path, media_type)
        raise ImageUnavailable(
            410,
            f"The file{'s' if len(paths) > 1 else ''} of this image ({', '.join(paths)}) changed or went away since "
            "it was ingested. Ingest the folder again to update the store.",
        )

    def rendition(self, image_id: str, kind: str) -> bytes:
        """A JPEG of `image_id` whose longer side is at most RENDITIONS[kind] pixels (cached; made once)."""
        size = RENDITIONS[kind]
        path = os.path.join(self.cache_folder, CACHE_FOLDER, str(size), checked_id(image_id)[:2], f"{image_id}.jpg")
        try:
            with open(path, "rb") as file:
                return file.read()
        except OSError:
            pass
        stored = self.read(image_id)
        data = jpeg(stored.data, size, self.max_megapixels)
        _write_atomically(path, data)
        return data


def checked_id(image_id: str) -> str:
    """`image_id` when it is 64 lowercase hex digits (what the store's ids are), else ImageUnavailable(404)."""
    if not IMAGE_ID.fullmatch(image_id):
        raise ImageUnavailable(404, f"{image_id[:80]!r} is not an image id (64 hex digits).")
    return image_id


def jpeg(source: "bytes | object", size: int, max_megapixels: float) -> bytes:
    """A JPEG of an image (bytes, a path or a PIL image) decoded by `clipstore.imaging.load_image` (which raises
    InvalidImageError for what is not a readable image within `max_megapixels`), scaled down so its longer side is
    at most `size` pixels."""
    decoded = load_image(source, max_megapixels=max_megapixels, min_side=size)  # JPEGs decode at a reduced scale
    image = decoded.image
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _write_atomically(path: str, data: bytes) -> None:
    """Write a cache file so a reader never sees half of it; a cache that cannot be written is only slower."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".part")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except OSError:
        pass
