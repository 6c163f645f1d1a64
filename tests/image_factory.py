"""Builders of real image files (good, bad and tricky) for clipstore's tests. No tests live here.

Test modules import it with:

    sys.path.insert(0, str(Path(__file__).parent))
    from image_factory import build_messy_folder, pattern_image, ...

Everything is deterministic: the same call writes the same bytes, so hashes and expectations are stable.
"""

from __future__ import annotations

import io
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, features

__all__ = [
    "EXIF_ORIENTATION",
    "build_messy_folder",
    "pattern_image",
    "solid_image",
    "write_exif_rotated_jpeg",
    "write_image",
    "write_mode_zoo",
    "write_oversized_png",
    "write_text_as_image",
    "write_truncated_jpeg",
    "write_zero_byte",
]

EXIF_ORIENTATION = 0x0112

# Colours of the mode-zoo files; tests check decoded pixels against these.
ZOO_COLOURS: dict[str, tuple[int, int, int]] = {
    "rgba_png": (200, 30, 30),
    "p_png_transparent": (30, 30, 200),
    "la_png": (60, 60, 60),
    "cmyk_jpeg": (255, 0, 0),  # written as CMYK (0, 255, 255, 0)
    "gif_animated": (0, 200, 0),  # first frame; the second is magenta
    "apng_animated": (250, 200, 0),  # first frame; the second is cyan
    "bmp": (120, 40, 160),
    "tiff_multipage": (240, 120, 0),  # first page; the second is grey
    "webp": (0, 150, 150),
}


def solid_image(color: tuple[int, ...] | int | str, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """A single-colour image of the given mode and size."""
    return Image.new(mode, size, color)


def pattern_image(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A deterministic RGB picture of a few coloured shapes; different seeds give clearly different pictures."""
    rng = random.Random(seed)
    width, height = size

    def colour() -> tuple[int, int, int]:
        return (rng.randrange(256), rng.randrange(256), rng.randrange(256))

    image = Image.new("RGB", size, colour())
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(4, 6)):
        x0, x1 = sorted(rng.randrange(width) for _ in range(2))
        y0, y1 = sorted(rng.randrange(height) for _ in range(2))
        box = (x0, y0, x1 + width // 6, y1 + height // 6)  # never degenerate
        shape = rng.choice(("rectangle", "ellipse", "triangle"))
        if shape == "rectangle":
            draw.rectangle(box, fill=colour())
        elif shape == "ellipse":
            draw.ellipse(box, fill=colour())
        else:
            draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=colour())
    return image


def write_image(path: str | os.PathLike[str], image: Image.Image, format: str | None = None, **save_kwargs: Any) -> Path:
    """Save `image` to `path` (creating parent folders); the format comes from the suffix unless given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=format, **save_kwargs)
    return path


def write_exif_rotated_jpeg(path: str | os.PathLike[str], size: tuple[int, int] = (80, 40), orientation: int = 6) -> Path:
    """A JPEG stored as `size` (landscape) with EXIF Orientation=`orientation` (6: shown rotated 90° clockwise).

    The stored left half is red and the right half blue, so with orientation 6 the displayed image (40x80 for the
    default size) is red on top and blue at the bottom.
    """
    width, height = size
    image = Image.new("RGB", size, (0, 0, 255))
    ImageDraw.Draw(image).rectangle((0, 0, width // 2 - 1, height - 1), fill=(255, 0, 0))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return write_image(path, image, "JPEG", quality=95, exif=exif.tobytes())


def write_truncated_jpeg(path: str | os.PathLike[str]) -> Path:
    """A valid JPEG of a pattern picture cut to about half its bytes (the header is intact, the scan is not)."""
    buffer = io.BytesIO()
    pattern_image(9001, size=(128, 96)).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def write_zero_byte(path: str | os.PathLike[str]) -> Path:
    """An empty file (typically named like an image, e.g. empty.jpg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_text_as_image(path: str | os.PathLike[str]) -> Path:
    """A plain-text file, typically given an image name such as fake.jpg or notes.jpg."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("These are my holiday notes, not a picture.\nDay 1: beach.\nDay 2: mountains.\n", encoding="utf-8")
    return path


def write_oversized_png(path: str | os.PathLike[str], megapixels: float) -> Path:
    """A PNG of at least `megapixels` million pixels that is tiny on disk and quick to write (a 1-bit image).

    A diagonal line keeps it from being a single flat colour; 5 MP takes well under a second.
    """
    pixels = math.ceil(megapixels * 1_000_000)
    width = math.ceil(math.sqrt(pixels))
    height = math.ceil(pixels / width)
    image = Image.new("1", (width, height), 0)
    ImageDraw.Draw(image).line((0, 0, width - 1, height - 1), fill=1)
    return write_image(path, image, "PNG")


def write_mode_zoo(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """One file per tricky Pillow mode, keyed by a descriptive name; colours are in `ZOO_COLOURS`.

    rgba_png, p_png_transparent, la_png: left half fully transparent (decoders must show white there).
    grey16_png: "I;16" PNG whose left/middle/right thirds are 0, 32896 (mid-grey, 128 in 8 bits) and 65535.
    gif_animated, apng_animated, tiff_multipage: two frames/pages of different colours.
    cmyk_jpeg, bmp, webp (only when Pillow has WebP support): solid colours.
    """
    folder = Path(folder)
    size = (64, 48)
    half = (0, 0, size[0] // 2 - 1, size[1] - 1)
    files: dict[str, Path] = {}

    # Transparent pixels are black on purpose: a naive convert("RGB") shows black there, not white.
    rgba = Image.new("RGBA", size, ZOO_COLOURS["rgba_png"] + (255,))
    ImageDraw.Draw(rgba).rectangle(half, fill=(0, 0, 0, 0))
    files["rgba_png"] = write_image(folder / "rgba.png", rgba)

    palette = Image.new("P", size, 1)
    palette.putpalette([0, 0, 0, *ZOO_COLOURS["p_png_transparent"]])
    ImageDraw.Draw(palette).rectangle(half, fill=0)
    files["p_png_transparent"] = write_image(folder / "palette_transparent.png", palette, transparency=0)

    grey_alpha = Image.new("LA", size, (ZOO_COLOURS["la_png"][0], 255))
    ImageDraw.Draw(grey_alpha).rectangle(half, fill=(0, 0))
    files["la_png"] = write_image(folder / "grey_alpha.png", grey_alpha)

    files["cmyk_jpeg"] = write_image(folder / "cmyk.jpg", Image.new("CMYK", size, (0, 255, 255, 0)), quality=95)

    third = size[0] // 3
    grey16 = np.zeros((size[1], size[0]), dtype=np.uint16)
    grey16[:, third : 2 * third] = 32896  # 128 * 257
    grey16[:, 2 * third :] = 65535
    image16 = Image.fromarray(grey16)
    assert image16.mode == "I;16", image16.mode
    files["grey16_png"] = write_image(folder / "grey16.png", image16)

    gif_frames = [solid_image(ZOO_COLOURS["gif_animated"], size), solid_image((255, 0, 255), size)]
    files["gif_animated"] = write_image(
        folder / "animated.gif", gif_frames[0], save_all=True, append_images=gif_frames[1:], duration=100, loop=0
    )

    apng_frames = [solid_image(ZOO_COLOURS["apng_animated"], size), solid_image((0, 255, 255), size)]
    files["apng_animated"] = write_image(
        folder / "animated_apng.png", apng_frames[0], save_all=True, append_images=apng_frames[1:], duration=100
    )

    files["bmp"] = write_image(folder / "solid.bmp", solid_image(ZOO_COLOURS["bmp"], size))

    pages = [solid_image(ZOO_COLOURS["tiff_multipage"], size), solid_image((128, 128, 128), size)]
    files["tiff_multipage"] = write_image(folder / "pages.tiff", pages[0], save_all=True, append_images=pages[1:])

    if features.check("webp"):
        files["webp"] = write_image(folder / "solid.webp", solid_image(ZOO_COLOURS["webp"], size), lossless=True)
    return files


def build_messy_folder(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Create the standard end-to-end test folder under `root` and describe what ingesting it must find.

    Returns a dict:
      "root":                      Path of the folder.
      "good":                      distinct decodable images (each must end up in the store once).
      "duplicate_of":              {copy: original} byte-identical copies of a good image.
      "bad":                       image-named files that must be reported as failures (empty, truncated, text).
      "ignored":                   files without an image extension (not images, not failures).
      "exif_rotated":              the EXIF Orientation=6 JPEG (stored 80x40, decodes to 40x80).
      "unicode_name":              the good image with a non-ASCII path.
      "mode_zoo":                  {name: path} from write_mode_zoo (all of them are also in "good").
      "symlink_loop":              the `loop -> ..` directory symlink, or None where symlinks are unavailable.
      "expected_distinct_images":  len(good).
    No file in it is over any sane megapixel limit (see write_oversized_png for that).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    beach = write_image(root / "photos" / "2021" / "beach.png", pattern_image(1))
    sunset = write_image(root / "photos" / "2021" / "sunset.jpg", pattern_image(2), quality=92)
    mountain = write_image(root / "photos" / "2022" / "trip" / "mountain.png", pattern_image(3))
    forest = write_image(root / "photos" / "2022" / "trip" / "deep" / "forest.jpeg", pattern_image(4), quality=92)
    unicode_name = write_image(root / "été" / "ümlaut-猫.png", pattern_image(5))
    exif_rotated = write_exif_rotated_jpeg(root / "photos" / "portrait-exif6.jpg")
    zoo = write_mode_zoo(root / "modes")

    duplicate = root / "photos" / "2022" / "beach (copy).png"
    shutil.copyfile(beach, duplicate)

    bad = [
        write_zero_byte(root / "broken" / "empty.jpg"),
        write_truncated_jpeg(root / "broken" / "truncated.jpg"),
        write_text_as_image(root / "broken" / "fake.jpg"),
    ]

    notes = root / "notes.txt"
    notes.write_text("Not an image, and not named like one: ingest should skip it silently.\n", encoding="utf-8")

    loop: Path | None = root / "photos" / "2022" / "trip" / "loop"
    try:
        os.symlink("..", loop, target_is_directory=True)
    except (OSError, NotImplementedError, AttributeError):
        loop = None  # e.g. Windows without developer mode

    good = [beach, sunset, mountain, forest, unicode_name, exif_rotated, *zoo.values()]
    return {
        "root": root,
        "good": good,
        "duplicate_of": {duplicate: beach},
        "bad": bad,
        "ignored": [notes],
        "exif_rotated": exif_rotated,
        "unicode_name": unicode_name,
        "mode_zoo": zoo,
        "symlink_loop": loop,
        "expected_distinct_images": len(good),
    }
