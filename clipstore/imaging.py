"""Turn image bytes (or paths, or PIL images) into RGB pictures an encoder can use, or say why not.

Everything here is a pure function: it never prints, never exits, and fails only with `InvalidImageError` whose
message is one short human reason ("empty file (0 bytes)", "not an image (looks like text)", ...) that the caller
can put on a report line next to the file name.

Pillow's decompression-bomb limit and ours
-------------------------------------------
Pillow guards against decompression bombs with the process-wide `PIL.Image.MAX_IMAGE_PIXELS`: above it `Image.open`
warns, above twice it raises `DecompressionBombError`. clipstore has its own per-call limit, `max_megapixels`, and
that is the one that must govern. We deliberately never assign `Image.MAX_IMAGE_PIXELS` (ingest decodes in a thread
pool, and other code in the process may rely on it). Instead:

* Pillow's warning is silenced only around the calls that can emit it (header parsing, and decoding images over
  Pillow's threshold), inside `warnings.catch_warnings()` held under a module lock, so our own decoder threads never
  interleave their save/restore of the process-wide warning filters. The same window silences Pillow's UserWarnings
  about corrupt metadata ("Corrupt EXIF data ..."), which would otherwise reach the CLI's output.
* If Pillow *refuses* a header, we re-open it through the format's plugin directly (the same call `Image.open`
  makes, minus the check) and apply our limit to the header's size before any pixel is decoded.
* A few plugins (TIFF, GIF) repeat Pillow's check while decoding; an image that trips that one is reported as
  refused by Pillow's limit, naming `PIL.Image.MAX_IMAGE_PIXELS`, rather than silently mutating it.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Union

import numpy as np
from PIL import Image

from clipstore.errors import InvalidImageError, InvalidOptionError

__all__ = [
    "DEFAULT_MAX_MEGAPIXELS",
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "DecodedImage",
    "decode_image",
    "load_image",
    "sniff_image_format",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".dib",
        ".tif", ".tiff", ".webp", ".heic", ".heif", ".avif",
    }
)

# Just under Pillow's own hard limit (2 * MAX_IMAGE_PIXELS ~= 178.9 MP), so with default settings the two agree.
DEFAULT_MAX_MEGAPIXELS: float = 178.0

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image]

# ISO base-media "ftyp" brands of HEIF-family stills (HEIC, HEIF, AVIF and their sequence variants).
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
)
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

# Bytes 14..18 of a BMP are the DIB header size; only these values exist, which tells real bitmaps from text that
# happens to start with "BM".
_BMP_DIB_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})

# Which Pillow plugins may open each sniffed format. Restricting Image.open to the plugin the magic bytes name keeps
# Pillow's more exotic (and riskier, e.g. EPS via Ghostscript) plugins away from untrusted files.
# HEIF is None (= all registered plugins) because pillow-heif or Pillow's native AVIF plugin may provide it.
_PIL_FORMATS: dict[str, tuple[str, ...] | None] = {
    "JPEG": ("JPEG",),
    "PNG": ("PNG",),
    "GIF": ("GIF",),
    "BMP": ("BMP",),
    "TIFF": ("TIFF",),
    "WEBP": ("WEBP",),
    "HEIF": None,
}

# What Pillow raises for broken files: decoders use OSError ("image file is truncated", "broken data stream"),
# header parsers SyntaxError/struct.error/EOFError, and a few plugins index or unpack past the end of short data.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes Image.UnidentifiedImageError
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    struct.error,
    zlib.error,
    RuntimeError,  # pillow-heif reports some libheif failures this way
)

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_HIGH_BIT_DEPTH_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})

_WHITE = (255, 255, 255)

_EXIF_ORIENTATION = 0x0112
# EXIF Orientation value -> the transpose that displays the image upright (the table ImageOps.exif_transpose uses).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Serialises our save/restore of the process-wide warning filters (see module docstring).
_PIL_WARNINGS_LOCK = threading.Lock()

# pillow-heif registration happens at most once, on the first HEIF-family file: None = not tried yet.
_HEIF_LOCK = threading.Lock()
_heif_registered: bool | None = None


@dataclass(frozen=True)
class DecodedImage:
    """A decoded picture ready for an encoder.

    `image` is mode "RGB", fully loaded, with EXIF orientation applied; `width`/`height` are its size after that
    rotation; `format` is Pillow's format name ("JPEG", "PNG", ...).
    """

    image: Image.Image
    width: int
    height: int
    format: str


def sniff_image_format(head: bytes) -> str | None:
    """Name the image format from a file's first bytes (16 suffice, 18 make BMP detection stricter).

    Returns one of 'JPEG', 'PNG', 'GIF', 'BMP', 'TIFF', 'WEBP', 'HEIF' (any HEIF-family brand: HEIC, HEIF, AVIF),
    or None when the bytes are not one of the image formats clipstore reads. File extensions play no part.
    """
    head = bytes(head[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"BM") and (len(head) < 18 or struct.unpack_from("<I", head, 14)[0] in _BMP_DIB_HEADER_SIZES):
        return "BMP"
    # Classic TIFF (42) and BigTIFF (43), in both byte orders.
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF"
    return None


def decode_image(
    data: bytes, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, min_side: int | None = None
) -> DecodedImage:
    """Decode image bytes into an RGB image ready for an encoder; raise InvalidImageError(reason) otherwise.

    The format comes from the magic bytes, never from a name. The size is checked against `max_megapixels` from the
    header alone, before any pixel is decoded. Multi-frame images (GIF, APNG, multi-page TIFF) give their first
    frame. Every pixel is decoded, so truncated files fail here rather than later. EXIF orientation is applied
    (unreadable EXIF is ignored), and any pixel mode becomes RGB: transparency is flattened onto white, 16/32-bit
    greyscale is scaled to 8 bits.

    `min_side`: the caller only needs an image whose shorter side is at least this many pixels (an encoder
    that downsizes anyway). JPEGs are then decoded at a reduced DCT scale (1/2, 1/4 or 1/8) that keeps both
    sides >= min_side — several times faster for camera photos. `width`/`height` still report the full size.

    Raises ValueError if `max_megapixels` is not a positive number (a caller bug, not a bad image).
    """
    _check_limit(max_megapixels)
    if len(data) == 0:
        raise InvalidImageError("empty file (0 bytes)")
    data = bytes(data)
    fmt = sniff_image_format(data[:32])
    if fmt is None:
        raise InvalidImageError(f"not an image ({describe_content(data[:512])})")
    if fmt == "HEIF":
        _register_heif_opener()
    image = _open(data, fmt)
    return _normalise(image, image.format or fmt, max_megapixels, min_side)


def load_image(
    source: ImageSource, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, min_side: int | None = None
) -> DecodedImage:
    """Load an image from a path, raw bytes, or a PIL image, normalised exactly like `decode_image`.

    * `str` / `os.PathLike`: the file is read and decoded. A missing or unreadable file raises InvalidImageError
      naming the path; decoding failures carry `decode_image`'s reason (without the path, which the caller has).
    * `bytes` / `bytearray` / `memoryview`: passed to `decode_image`.
    * `PIL.Image.Image`: its current frame is size-checked, loaded, oriented and converted to RGB the same way;
      `format` is `image.format` or "UNKNOWN". The caller's image is not modified (beyond Pillow loading a lazily
      opened file).

    Raises TypeError for any other kind of source.
    """
    if isinstance(source, Image.Image):
        _check_limit(max_megapixels)
        return _normalise(source, source.format or "UNKNOWN", max_megapixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), max_megapixels=max_megapixels, min_side=min_side)
    if isinstance(source, (str, os.PathLike)):
        return decode_image(_read_file(source), max_megapixels=max_megapixels, min_side=min_side)
    raise TypeError(f"load_image() needs a path, bytes or a PIL image, not {type(source).__name__}")


# --- opening ---------------------------------------------------------------------------------------------------


def _read_file(source: str | os.PathLike[str]) -> bytes:
    path = os.path.expanduser(os.fspath(source))
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise InvalidImageError(f"cannot read {path}: no such file") from exc
    except IsADirectoryError as exc:
        raise InvalidImageError(f"cannot read {path}: it is a directory") from exc
    except OSError as exc:
        raise InvalidImageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _open(data: bytes, fmt: str) -> Image.Image:
    """Parse the header only (Pillow decodes pixels lazily), turning every failure into InvalidImageError."""
    try:
        with _pillow_warnings_silenced():
            return Image.open(io.BytesIO(data), formats=_PIL_FORMATS[fmt])
    except Image.DecompressionBombError:
        # Pillow's global limit refused the header, but ours governs: re-open without Pillow's check.
        # _normalise applies max_megapixels to the header size before decoding any pixel.
        return _open_without_pillow_limit(data, fmt)
    except Image.UnidentifiedImageError as exc:
        if fmt == "HEIF":
            raise InvalidImageError(_heif_unreadable_reason(data)) from exc
        raise InvalidImageError(
            f"truncated or corrupt image data: starts like {fmt} but its header cannot be parsed"
        ) from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImageError(_corrupt_reason(fmt, exc)) from exc


def _open_without_pillow_limit(data: bytes, fmt: str) -> Image.Image:
    """Open like `Image.open` does (plugin accept() then factory) but without its MAX_IMAGE_PIXELS check."""
    Image.init()
    head = data[:16]  # the prefix Image.open hands to accept()
    for name in _PIL_FORMATS[fmt] or tuple(Image.ID):
        if name not in Image.OPEN:
            continue
        factory, accept = Image.OPEN[name]
        verdict = accept(head) if accept else True
        if not verdict or isinstance(verdict, str):  # a str verdict is Pillow's "almost, but no"
            continue
        try:
            with _pillow_warnings_silenced():
                return factory(io.BytesIO(data), "")
        except Image.DecompressionBombError as exc:
            raise InvalidImageError(_pillow_refused_reason(fmt, exc)) from exc
        except _DECODE_ERRORS as exc:
            raise InvalidImageError(_corrupt_reason(fmt, exc)) from exc
    raise InvalidImageError(f"truncated or corrupt image data: starts like {fmt} but its header cannot be parsed")


@contextlib.contextmanager
def _pillow_warnings_silenced() -> Iterator[None]:
    """Ignore Pillow's DecompressionBombWarning (our own limit governs) and its metadata UserWarnings for a moment.

    catch_warnings() swaps the process-wide filter list; the lock stops two of our decoder threads from interleaving
    their save/restore, which could otherwise leave our filter behind or drop one of theirs. Keep the guarded work
    short (header and metadata parsing): it runs one thread at a time.
    """
    with _PIL_WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def _register_heif_opener() -> bool:
    """Register pillow-heif's HEIC/HEIF opener with Pillow, once; return whether pillow-heif is installed."""
    global _heif_registered
    with _HEIF_LOCK:
        if _heif_registered is None:
            try:
                import pillow_heif  # optional extra: clipstore[heic]
            except ImportError:
                _heif_registered = False
            else:
                pillow_heif.register_heif_opener()
                _heif_registered = True
        return _heif_registered


def _heif_unreadable_reason(data: bytes) -> str:
    if _ftyp_brands(data) & _AVIF_BRANDS:
        # Pillow >= 11.3 reads AVIF itself; pillow-heif dropped AVIF, so it is not the fix here.
        return "AVIF image: this Pillow cannot read AVIF (upgrade Pillow to 11.3 or later to read it)"
    if not _register_heif_opener():
        return "HEIC image: install pillow-heif (pip install 'clipstore[heic]') to read it"
    return "truncated or corrupt image data: HEIC/HEIF header cannot be parsed"


def _ftyp_brands(data: bytes) -> set[bytes]:
    """Major and compatible brands of the leading ISO-BMFF "ftyp" box (an AVIF may say mif1 first, avif later)."""
    (box_size,) = struct.unpack_from(">I", data, 0)
    end = min(max(box_size, 16), len(data), 256)
    return {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}


# --- decoding and normalising -----------------------------------------------------------------------------------


def _normalise(image: Image.Image, fmt: str, max_megapixels: float, min_side: int | None = None) -> DecodedImage:
    """Size-check, fully decode, orient and convert to RGB an opened (possibly still lazy) image."""
    width, height = image.size
    megapixels = width * height / 1_000_000
    if megapixels > max_megapixels:
        raise InvalidImageError(
            f"image is {width}x{height} = {megapixels:.1f} megapixels, over the {max_megapixels:g} megapixel "
            "limit (raise max_megapixels to accept it)"
        )
    if min_side and image.format == "JPEG" and min(width, height) >= 2 * min_side:
        # draft() picks the smallest DCT scale whose size is >= the requested one on both sides.
        image.draft(image.mode, (min_side, min_side))
    decoded_size = image.size
    try:
        # Only images Pillow would warn about need the (serialising) warning filter; everything else decodes freely
        # in parallel. Reading MAX_IMAGE_PIXELS is fine: it is assigning it that we avoid.
        if Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS:
            with _pillow_warnings_silenced():
                image.load()
        else:
            image.load()
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(_pillow_refused_reason(fmt, exc)) from exc
    except MemoryError as exc:
        raise InvalidImageError(f"image is {width}x{height}: not enough memory to decode it") from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImageError(_corrupt_reason(fmt, exc)) from exc

    try:
        rgb = _to_rgb(_apply_exif_orientation(image))
    except _DECODE_ERRORS as exc:
        raise InvalidImageError(f"cannot convert {fmt} pixels in mode {image.mode} to RGB: {_detail(exc)}") from exc
    if rgb is image:
        # Never hand back the caller's object, or a file-backed one: the result must stand alone.
        rgb = rgb.copy()
    if decoded_size != (width, height):  # decoded at reduced scale: report the full size, oriented
        width, height = (width, height) if rgb.size == decoded_size else (height, width)
        return DecodedImage(image=rgb, width=width, height=height, format=fmt)
    return DecodedImage(image=rgb, width=rgb.width, height=rgb.height, format=fmt)


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF (or XMP) Orientation tag says, like ImageOps.exif_transpose.

    exif_transpose itself is not used because it also re-serialises the EXIF block for its output (which we drop
    anyway); that is where broken EXIF raises, and it costs a full pixel copy when there is nothing to rotate.
    """
    try:
        with _pillow_warnings_silenced():
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        method = _ORIENTATION_TRANSPOSE.get(orientation)
    except Exception:  # noqa: BLE001 - EXIF is free-form metadata; a broken block must not cost us the pixels
        return image
    return image if method is None else image.transpose(method)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB the way a viewer would show it."""
    mode = image.mode
    if mode in _HIGH_BIT_DEPTH_GREY_MODES:
        return _high_bit_depth_grey_to_rgb(image)
    if mode in _ALPHA_MODES or "transparency" in image.info or _has_alpha_palette(image):
        return _flatten_on_white(image)
    if mode == "RGB":
        return image
    return image.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX, ...


def _has_alpha_palette(image: Image.Image) -> bool:
    palette = getattr(image, "palette", None)
    return image.mode == "P" and palette is not None and palette.mode == "RGBA"


def _flatten_on_white(image: Image.Image) -> Image.Image:
    """Composite a transparent image over white (encoders see no alpha, and black-behind-alpha misleads them)."""
    if image.mode == "La":
        image = image.convert("LA")  # Pillow has no direct La -> RGBA conversion
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _high_bit_depth_grey_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit or float greyscale into 0..255 by its value range (Pillow's convert would clip it to white)."""
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = values / 257.0  # 0..65535 -> 0..255
    elif image.mode == "I":
        # 32-bit ints are almost always widened 16-bit data; small values are already 8-bit.
        peak = values.max() if values.size else 0
        scaled = np.clip(values, 0, 65535) / 257.0 if peak > 255 else values
    else:  # "F"
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        peak = values.max() if values.size else 0.0
        scaled = values * 255.0 if peak <= 1.0 else values
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


# --- messages ---------------------------------------------------------------------------------------------------


def _check_limit(max_megapixels: float) -> None:
    try:
        valid = float(max_megapixels) > 0  # NaN compares False too
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise InvalidOptionError(f"max_megapixels must be a positive number, not {max_megapixels!r}")


def _detail(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _corrupt_reason(fmt: str, exc: BaseException) -> str:
    return f"truncated or corrupt image data: {fmt}: {_detail(exc)}"


def _pillow_refused_reason(fmt: str, exc: BaseException) -> str:
    return (
        f"{fmt} image refused by Pillow's own decompression-bomb limit ({_detail(exc)}); "
        "raise PIL.Image.MAX_IMAGE_PIXELS as well as max_megapixels to accept it"
    )


def describe_content(head: bytes) -> str:
    """A cheap guess at what non-image bytes are, for the "not an image (...)" message."""
    if head.startswith(b"%PDF"):
        return "looks like a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "looks like a ZIP archive"
    if head.startswith(b"\x1f\x8b"):
        return "looks like gzip data"
    if head[4:8] == b"ftyp":
        return "looks like a video or other MP4/QuickTime file"
    if head.startswith(b"RIFF"):
        return "looks like a RIFF file (e.g. WAV or AVI)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml")) and b"<svg" in head.lower():
        return "looks like SVG, a vector format clipstore does not rasterise"
    if text.startswith((b"<!doctype html", b"<html")):
        return "looks like HTML"
    try:
        # Incremental decoding tolerates a multi-byte character cut off by the end of the sniffed window.
        decoded = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "unrecognised content"
    if decoded and all(ch.isprintable() or ch in "\t\r\n\f" for ch in decoded):
        return "looks like text"
    return "unrecognised content"

