"""The geometric half of a CLIP model's image preprocessing (resize, crop, RGB) in Pillow alone.

open_clip's inference transform for the usual resize modes is torchvision's `Resize` (+ `CenterCrop`) and a
conversion to RGB. On Pillow images those call `Image.resize` with the same filter, `Image.crop` and
`Image.convert`, so doing the same calls here gives the same pixels, bit for bit
(`tests/encoders/test_geometry.py` checks it against open_clip's transform) — without importing torch,
torchvision or open_clip (several seconds in a fresh process). Processes that decode images but never embed
them (a distributed ingest's read tasks) use it; `geometry_for` answers None for the rarer modes, which then go
through open_clip's own transform.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from PIL import Image

if TYPE_CHECKING:
    from clipstore.encoders.identity import ModelIdentity

_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "random": Image.Resampling.BICUBIC}
"""open_clip's interpolation names -> Pillow filters (open_clip runs "random" as bicubic at inference)."""


def geometry_for(identity: "ModelIdentity") -> Callable[[Image.Image], Image.Image] | None:
    """`identity`'s resize/crop/RGB step as a function on Pillow images, or None when its resize mode is one
    this module does not reproduce (then use open_clip's transform)."""
    if (identity.interpolation or "bicubic") not in _FILTERS or identity.resize_mode not in ("shortest", "squash", "", None):
        return None
    size, interpolation, mode = identity.image_size, identity.interpolation or "bicubic", identity.resize_mode or "shortest"
    return lambda image: resize_and_crop(image, size, interpolation, mode)


def resize_and_crop(image: Image.Image, size: int, interpolation: str, resize_mode: str) -> Image.Image:
    """open_clip's inference geometry of one image: "shortest" (the shorter side to `size`, then the centred
    square) or "squash" (to `size` x `size`), with `interpolation` ("bicubic" or "bilinear"), as RGB."""
    resample = _FILTERS[interpolation]
    if resize_mode == "squash":
        return _squash(image, size, resample)
    return _shortest_side(image, size, resample)


def _shortest_side(image: Image.Image, size: int, resample: int) -> Image.Image:
    """torchvision's Resize(size) (shorter side to `size`, the longer scaled and truncated; no resize when the
    size is already right), then CenterCrop(size) and convert("RGB")."""
    width, height = image.size
    if width <= height:
        new_width, new_height = size, int(size * height / width)
    else:
        new_width, new_height = int(size * width / height), size
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), resample)
    top, left = int(round((new_height - size) / 2.0)), int(round((new_width - size) / 2.0))
    return image.crop((left, top, left + size, top + size)).convert("RGB")


def _squash(image: Image.Image, size: int, resample: int) -> Image.Image:
    """torchvision's Resize((size, size)), then convert("RGB")."""
    if image.size != (size, size):
        image = image.resize((size, size), resample)
    return image.convert("RGB")
