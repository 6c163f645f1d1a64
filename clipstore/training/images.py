"""Images for training: decoded with ingest's safeguards and shrunk to what augmentation needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


def load_training_image(path: str | None, *, min_side: int, max_side: int) -> "Image.Image | None":
    """The image at `path` decoded (at least `min_side` on its shorter side while decoding, see
    `ModelIdentity.decode_min_side`) and shrunk to fit `max_side`; None when there is no path or the file cannot
    be read (such an image only loses its augmentations)."""
    from clipstore.imaging import load_image

    if path is None:
        return None
    try:
        image = load_image(path, min_side=min_side).image
    except Exception:  # noqa: BLE001 - an unreadable file only loses its augmentations
        return None
    image.thumbnail((max_side, max_side))
    return image
