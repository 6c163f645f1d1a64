"""Tests of clipstore.imaging: sniffing, decoding, normalising and rejecting images, on real files."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from image_factory import (
    ZOO_COLOURS,
    build_messy_folder,
    pattern_image,
    solid_image,
    write_exif_rotated_jpeg,
    write_image,
    write_mode_zoo,
    write_oversized_png,
    write_text_as_image,
    write_truncated_jpeg,
    write_zero_byte,
)

from clipstore.errors import ClipstoreError, InvalidImageError
from clipstore.imaging import (
    DEFAULT_MAX_MEGAPIXELS,
    IMAGE_EXTENSIONS,
    DecodedImage,
    decode_image,
    load_image,
    sniff_image_format,
)

HAS_WEBP = features.check("webp")
HAS_AVIF = features.check("avif")
HAS_PILLOW_HEIF = importlib.util.find_spec("pillow_heif") is not None

# A minimal ISO-BMFF ftyp box: size, "ftyp", major brand, minor version, compatible brands.
HEIC_HEAD = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic"


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def close_to(actual, expected, tolerance: int = 6) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming width x height whose pixel data stops after a few bytes (a file cut after its header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(bytes(1 + width))[:-6]  # the start of a zlib stream that never finishes
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    return write_mode_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def two_megapixel_png(tmp_path_factory) -> Path:
    return write_oversized_png(tmp_path_factory.mktemp("big") / "two_mp.png", 2.0)


# --- constants ----------------------------------------------------------------------------------------------------


def test_image_extensions_are_lowercase_dotted_and_complete():
    expected = {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".heic", ".heif", ".avif"}
    assert IMAGE_EXTENSIONS == expected
    assert isinstance(IMAGE_EXTENSIONS, frozenset)


def test_default_limit_sits_just_under_pillows_own_hard_limit():
    assert DEFAULT_MAX_MEGAPIXELS == 178.0
    assert DEFAULT_MAX_MEGAPIXELS * 1_000_000 <= 2 * Image.MAX_IMAGE_PIXELS


# --- sniffing -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("JPEG", "JPEG"), ("PNG", "PNG"), ("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("WEBP", "WEBP")],
)
def test_sniff_recognises_real_files_from_their_first_16_bytes(fmt, expected):
    if fmt == "WEBP" and not HAS_WEBP:
        pytest.skip("this Pillow has no WebP support")
    data = encode(pattern_image(7), fmt)
    assert sniff_image_format(data[:16]) == expected
    assert sniff_image_format(data) == expected


def test_sniff_recognises_big_endian_tiff_and_bigtiff():
    assert sniff_image_format(b"MM\x00*\x00\x00\x00\x08" + bytes(8)) == "TIFF"
    assert sniff_image_format(b"II+\x00\x08\x00\x00\x00" + bytes(8)) == "TIFF"


@pytest.mark.parametrize("brand", [b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif"])
def test_sniff_recognises_heif_family_brands(brand):
    head = struct.pack(">I", 24) + b"ftyp" + brand + bytes(4) + b"mif1heic"
    assert sniff_image_format(head[:16]) == "HEIF"


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"hello, this is plain text\n",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj",
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00\x00\x00\x00\x00",
        struct.pack(">I", 24) + b"ftypisom\x00\x00\x02\x00isomiso2",  # an MP4 video
        b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00",
        b"BMW service notes: oil changed at 40000 km\n",  # starts with "BM" but is not a bitmap
        b"\xff\xd8",  # too short to be a JPEG
    ],
)
def test_sniff_rejects_non_images(head):
    assert sniff_image_format(head) is None


# --- failures with telling messages -------------------------------------------------------------------------------


def assert_report_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message


def test_empty_file_is_reported_as_empty(tmp_path):
    with pytest.raises(InvalidImageError, match=r"^empty file \(0 bytes\)$") as caught:
        load_image(write_zero_byte(tmp_path / "empty.jpg"))
    assert isinstance(caught.value, ClipstoreError)


def test_text_named_like_a_jpeg_is_not_an_image_and_looks_like_text(tmp_path):
    with pytest.raises(InvalidImageError) as caught:
        load_image(write_text_as_image(tmp_path / "notes.jpg"))
    message = str(caught.value)
    assert message.startswith("not an image")
    assert "text" in message
    assert_report_line(message)


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        (b"%PDF-1.4\n" + bytes(range(256)), "PDF"),
        (b"PK\x03\x04" + bytes(200), "ZIP"),
        (b"<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
        (bytes(range(256)) * 4, "unrecognised content"),
    ],
)
def test_other_non_images_say_what_they_look_like(data, hint):
    with pytest.raises(InvalidImageError, match="^not an image") as caught:
        decode_image(data)
    assert hint in str(caught.value)


def test_truncated_jpeg_fails_on_full_decode(tmp_path):
    path = write_truncated_jpeg(tmp_path / "truncated.jpg")
    assert sniff_image_format(path.read_bytes()) == "JPEG"  # the header survives; only the pixels are missing
    with pytest.raises(InvalidImageError, match="^truncated or corrupt image data: .*truncated") as caught:
        load_image(path)
    assert_report_line(str(caught.value))


def test_truncated_png_fails_on_full_decode():
    data = encode(pattern_image(3, size=(200, 150)), "PNG")
    with pytest.raises(InvalidImageError, match="^truncated or corrupt image data"):
        decode_image(data[: len(data) * 2 // 3])


def test_png_with_corrupted_pixel_data_fails():
    data = bytearray(encode(pattern_image(4, size=(200, 150)), "PNG"))
    idat = data.index(b"IDAT") + 4
    data[idat + 20 : idat + 60] = bytes(40)  # the chunk's CRC no longer matches
    with pytest.raises(InvalidImageError, match="^truncated or corrupt image data"):
        decode_image(bytes(data))


def test_jpeg_magic_followed_by_garbage_is_corrupt_not_a_crash():
    with pytest.raises(InvalidImageError, match="^truncated or corrupt image data"):
        decode_image(b"\xff\xd8\xff\xe0" + b"garbage" * 20)


def test_header_only_png_is_corrupt():
    with pytest.raises(InvalidImageError, match="^truncated or corrupt image data"):
        decode_image(png_header_only(64, 48))


@pytest.mark.skipif(HAS_PILLOW_HEIF, reason="pillow-heif is installed, so HEIC is readable")
def test_heic_without_pillow_heif_says_how_to_install_it():
    with pytest.raises(InvalidImageError) as caught:
        decode_image(HEIC_HEAD + bytes(64))
    message = str(caught.value)
    assert message.startswith("HEIC image")
    assert "pip install 'clipstore[heic]'" in message


@pytest.mark.skipif(not HAS_AVIF, reason="this Pillow cannot write AVIF")
def test_avif_is_decoded_by_pillow_itself():
    data = encode(solid_image((10, 200, 30)), "AVIF")
    assert sniff_image_format(data) == "HEIF"
    decoded = decode_image(data)
    assert decoded.format == "AVIF"
    assert close_to(decoded.image.getpixel((5, 5)), (10, 200, 30), tolerance=12)


# --- EXIF orientation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "size", "red_at", "blue_at"),
    [
        (1, (80, 40), (10, 20), (70, 20)),  # as stored: red left, blue right
        (3, (80, 40), (70, 20), (10, 20)),  # rotated 180°: red right
        (6, (40, 80), (20, 10), (20, 70)),  # rotated 90° clockwise: red on top
        (8, (40, 80), (20, 70), (20, 10)),  # rotated 90° counter-clockwise: red at the bottom
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, size, red_at, blue_at):
    decoded = load_image(write_exif_rotated_jpeg(tmp_path / "rotated.jpg", orientation=orientation))
    assert (decoded.width, decoded.height) == size
    assert decoded.image.size == size
    assert close_to(decoded.image.getpixel(red_at), (255, 0, 0), tolerance=20)
    assert close_to(decoded.image.getpixel(blue_at), (0, 0, 255), tolerance=20)


def test_default_exif_rotated_jpeg_is_40x80(tmp_path):
    decoded = load_image(write_exif_rotated_jpeg(tmp_path / "portrait.jpg"))
    assert (decoded.width, decoded.height) == (40, 80)


def test_corrupt_exif_is_ignored_quietly():
    # An IFD offset far past the end: Pillow would warn "Corrupt EXIF data"; we just keep the stored orientation.
    data = encode(solid_image((1, 2, 3), (80, 40)), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = decode_image(data)
    assert (decoded.width, decoded.height) == (80, 40)
    assert [str(w.message) for w in caught] == []


def test_exif_that_cannot_be_read_falls_back_to_the_stored_pixels(tmp_path, monkeypatch):
    path = write_exif_rotated_jpeg(tmp_path / "rotated.jpg")

    def broken_getexif(self):
        raise SyntaxError("not a TIFF file")

    monkeypatch.setattr(Image.Image, "getexif", broken_getexif)
    decoded = load_image(path)
    assert (decoded.width, decoded.height) == (80, 40)


# --- pixel modes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rgba_png", "p_png_transparent", "la_png"])
def test_transparent_regions_are_composited_on_white(zoo, name):
    with Image.open(zoo[name]) as raw:
        assert raw.mode in {"RGBA", "P", "LA"}  # the factory really wrote a transparent mode
    decoded = load_image(zoo[name])
    assert decoded.image.mode == "RGB"
    assert close_to(decoded.image.getpixel((5, 24)), (255, 255, 255), tolerance=1)  # transparent half
    expected = ZOO_COLOURS[name]
    if name == "la_png":
        expected = (expected[0],) * 3
    assert close_to(decoded.image.getpixel((58, 24)), expected, tolerance=1)  # opaque half keeps its colour


def test_half_transparent_pixels_blend_with_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    decoded = decode_image(encode(image, "PNG"))
    assert close_to(decoded.image.getpixel((1, 1)), (127, 127, 127), tolerance=2)


def test_sixteen_bit_greyscale_is_scaled_not_clipped_to_white(zoo):
    with Image.open(zoo["grey16_png"]) as raw:
        assert raw.mode.startswith("I")
    decoded = load_image(zoo["grey16_png"])
    image = decoded.image
    assert image.mode == "RGB"
    assert close_to(image.getpixel((5, 24)), (0, 0, 0), tolerance=1)
    assert close_to(image.getpixel((32, 24)), (128, 128, 128), tolerance=1)  # a naive convert gives 255
    assert close_to(image.getpixel((60, 24)), (255, 255, 255), tolerance=1)


@pytest.mark.parametrize(
    ("values", "mode", "expected"),
    [
        (np.array([[0, 32896, 65535]], dtype=np.int32), "I", (0, 128, 255)),  # 16-bit data widened to 32 bits
        (np.array([[0, 100, 255]], dtype=np.int32), "I", (0, 100, 255)),  # already 8-bit range
        (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F", (0, 128, 255)),  # unit range
        (np.array([[-5.0, 100.0, 300.0]], dtype=np.float32), "F", (0, 100, 255)),  # 0..255 range, clipped
        (np.array([[0, 32896, 65535]], dtype=np.uint16), "I;16", (0, 128, 255)),
    ],
)
def test_high_bit_depth_pil_images_are_scaled_by_their_range(values, mode, expected):
    image = Image.fromarray(values)
    assert image.mode == mode
    decoded = load_image(image)
    assert [decoded.image.getpixel((x, 0))[0] for x in range(3)] == list(expected)


def test_big_endian_sixteen_bit_is_read_with_the_right_byte_order():
    image = Image.frombytes("I;16B", (2, 1), struct.pack(">HH", 32896, 65535))
    decoded = load_image(image)
    assert [decoded.image.getpixel((x, 0))[0] for x in range(2)] == [128, 255]


def test_cmyk_jpeg_becomes_rgb(zoo):
    with Image.open(zoo["cmyk_jpeg"]) as raw:
        assert raw.mode == "CMYK"
    decoded = load_image(zoo["cmyk_jpeg"])
    assert decoded.image.mode == "RGB"
    assert close_to(decoded.image.getpixel((30, 20)), ZOO_COLOURS["cmyk_jpeg"], tolerance=8)


@pytest.mark.parametrize("name", ["gif_animated", "apng_animated", "tiff_multipage"])
def test_multi_frame_images_give_their_first_frame(zoo, name):
    with Image.open(zoo[name]) as raw:
        assert getattr(raw, "n_frames", 1) == 2
    decoded = load_image(zoo[name])
    assert close_to(decoded.image.getpixel((30, 20)), ZOO_COLOURS[name], tolerance=4)


@pytest.mark.parametrize("name", ["bmp", "webp"])
def test_plain_formats_decode(zoo, name):
    if name not in zoo:
        pytest.skip("this Pillow has no WebP support")
    decoded = load_image(zoo[name])
    assert decoded.format == name.upper()
    assert close_to(decoded.image.getpixel((30, 20)), ZOO_COLOURS[name], tolerance=2)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGBX", "YCbCr", "HSV", "LAB", "La", "RGBa", "PA", "I;16L"])
def test_every_mode_ends_up_rgb(mode):
    decoded = load_image(solid_image(0, (8, 6), mode))
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (8, 6)


def test_every_zoo_file_decodes_to_a_loaded_rgb_image_with_its_format(zoo):
    formats = {".png": "PNG", ".jpg": "JPEG", ".gif": "GIF", ".bmp": "BMP", ".tiff": "TIFF", ".webp": "WEBP"}
    for name, path in zoo.items():
        decoded = load_image(path)
        assert decoded.image.mode == "RGB", name
        assert decoded.format == formats[path.suffix], name
        assert decoded.image.tobytes()  # pixels are there, not lazily pending


# --- size limits --------------------------------------------------------------------------------------------------


def test_megapixel_limit_rejects_and_a_raised_limit_accepts(two_megapixel_png):
    with pytest.raises(InvalidImageError) as caught:
        load_image(two_megapixel_png, max_megapixels=1)
    message = str(caught.value)
    assert "1415x1414 = 2.0 megapixels" in message
    assert "over the 1 megapixel limit" in message
    assert "raise max_megapixels" in message

    decoded = load_image(two_megapixel_png, max_megapixels=3)
    assert (decoded.width, decoded.height) == (1415, 1414)


def test_megapixel_limit_is_checked_before_any_pixel_is_decoded():
    # The header claims 20000x20000 but there is no pixel data: the size, not the truncation, must be reported.
    with pytest.raises(InvalidImageError, match=r"^image is 20000x20000 = 400\.0 megapixels, over the 178 megapixel"):
        decode_image(png_header_only(20000, 20000))


def test_megapixel_limit_applies_to_pil_images_too():
    with pytest.raises(InvalidImageError, match="over the 0.001 megapixel limit"):
        load_image(solid_image(0, (100, 100)), max_megapixels=0.001)


@pytest.mark.parametrize("bad_limit", [0, -1, float("nan")])
def test_nonsense_limit_is_a_caller_bug(bad_limit):
    with pytest.raises(ValueError, match="max_megapixels"):
        decode_image(b"\x89PNG", max_megapixels=bad_limit)


def test_our_limit_governs_when_pillows_global_limit_is_lower(two_megapixel_png, monkeypatch):
    # Pillow refuses images over 2 * MAX_IMAGE_PIXELS (here 1 MP) outright; our raised limit must still win.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500_000)
    decoded = load_image(two_megapixel_png, max_megapixels=3)
    assert (decoded.width, decoded.height) == (1415, 1414)
    with pytest.raises(InvalidImageError, match="over the 1.5 megapixel limit"):
        load_image(two_megapixel_png, max_megapixels=1.5)
    assert Image.MAX_IMAGE_PIXELS == 500_000  # never reassigned by us


def test_no_decompression_bomb_warning_under_our_limit(two_megapixel_png, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_500_000)  # 2 MP is in Pillow's "warn" band
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = load_image(two_megapixel_png, max_megapixels=3)
    assert decoded.width == 1415
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_plugin_level_bomb_check_is_reported_naming_pillows_setting(two_megapixel_png, monkeypatch, tmp_path):
    # TIFF repeats Pillow's check while decoding; we report it instead of quietly changing Pillow's global.
    with Image.open(two_megapixel_png) as image:
        tiff = write_image(tmp_path / "big.tiff", image.convert("L"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500_000)
    with pytest.raises(InvalidImageError, match="MAX_IMAGE_PIXELS"):
        load_image(tiff, max_megapixels=3)


def test_warning_filters_are_left_as_they_were(zoo):
    before = list(warnings.filters)
    for path in zoo.values():
        load_image(path)
    assert warnings.filters == before


# --- load_image sources -------------------------------------------------------------------------------------------


def test_load_image_accepts_paths_bytes_and_pil_images(tmp_path):
    path = write_image(tmp_path / "pic.png", pattern_image(11))
    data = path.read_bytes()
    results = [
        load_image(path),
        load_image(str(path)),
        load_image(data),
        load_image(bytearray(data)),
        load_image(memoryview(data)),
        decode_image(data),
    ]
    for result in results:
        assert isinstance(result, DecodedImage)
        assert result.format == "PNG"
        assert (result.width, result.height) == (96, 72)
        assert result.image.tobytes() == pattern_image(11).tobytes()


def test_load_image_of_a_pil_image_normalises_without_touching_the_original():
    original = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    decoded = load_image(original)
    assert decoded.format == "UNKNOWN"
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((3, 3)) == (255, 255, 255)
    assert original.mode == "RGBA"

    rgb = pattern_image(12)
    decoded = load_image(rgb)
    assert decoded.image is not rgb  # a copy: later edits to either side do not leak
    assert decoded.image.tobytes() == rgb.tobytes()


def test_load_image_of_an_opened_file_keeps_its_format_and_orientation(tmp_path):
    with Image.open(write_exif_rotated_jpeg(tmp_path / "r.jpg")) as opened:
        decoded = load_image(opened)
    assert decoded.format == "JPEG"
    assert (decoded.width, decoded.height) == (40, 80)


def test_missing_path_message_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "gone.jpg"
    with pytest.raises(InvalidImageError) as caught:
        load_image(missing)
    assert str(missing) in str(caught.value)
    assert_report_line(str(caught.value))


def test_directory_path_message_names_the_path(tmp_path):
    with pytest.raises(InvalidImageError) as caught:
        load_image(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_load_image_rejects_other_types():
    with pytest.raises(TypeError):
        load_image(42)  # type: ignore[arg-type]


def test_decoded_image_is_frozen(tmp_path):
    decoded = load_image(pattern_image(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.width = 1  # type: ignore[misc]


# --- concurrency --------------------------------------------------------------------------------------------------


def test_parallel_decoding_matches_sequential(zoo, tmp_path):
    paths = list(zoo.values()) + [write_image(tmp_path / f"p{i}.png", pattern_image(i)) for i in range(8)]
    datas = [p.read_bytes() for p in paths] * 4
    sequential = [decode_image(d).image.tobytes() for d in datas]
    filters_before = list(warnings.filters)
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda d: decode_image(d).image.tobytes(), datas))
    assert parallel == sequential
    assert warnings.filters == filters_before


# --- the shared messy folder --------------------------------------------------------------------------------------


def test_messy_folder_matches_its_own_description(tmp_path):
    info = build_messy_folder(tmp_path / "messy")
    good, bad = info["good"], info["bad"]
    assert info["expected_distinct_images"] == len(good) >= 4 + 1 + 1 + 8

    decoded = [load_image(path) for path in good]
    pixels = {d.image.tobytes() for d in decoded}
    assert len(pixels) == len(good), "good images must be visually distinct"
    assert len({p.read_bytes() for p in good}) == len(good)

    for duplicate, original in info["duplicate_of"].items():
        assert duplicate.read_bytes() == original.read_bytes()
        assert duplicate not in good

    reasons = []
    for path in bad:
        with pytest.raises(InvalidImageError) as caught:
            load_image(path)
        reasons.append(str(caught.value))
    assert any(r.startswith("empty file") for r in reasons)
    assert any(r.startswith("truncated or corrupt") for r in reasons)
    assert any(r.startswith("not an image") for r in reasons)

    for path in info["ignored"]:
        assert path.suffix.lower() not in IMAGE_EXTENSIONS
    assert all(p.suffix.lower() in IMAGE_EXTENSIONS for p in good + bad)

    assert load_image(info["exif_rotated"]).image.size == (40, 80)
    assert any(ord(ch) > 127 for ch in str(info["unicode_name"].relative_to(info["root"])))
    assert max(len(p.relative_to(info["root"]).parts) for p in good) >= 3  # nested at least two folders deep

    loop = info["symlink_loop"]
    if loop is not None:
        assert loop.is_symlink()
        assert loop.resolve() == loop.parent.parent.resolve()


# --- reduced-scale JPEG decoding (min_side) ---------------------------------------------------------------------


def _big_jpeg(size=(2000, 1500), orientation=None) -> bytes:
    buffer = io.BytesIO()
    image = pattern_image(7, size=size)
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    else:
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_min_side_decodes_large_jpegs_smaller_but_reports_full_size():
    decoded = decode_image(_big_jpeg(), min_side=448)
    assert (decoded.width, decoded.height) == (2000, 1500)
    assert decoded.image.size == (1000, 750)  # DCT scale 1/2: the smallest that keeps both sides >= 448
    assert min(decode_image(_big_jpeg(), min_side=128).image.size) >= 128
    assert decode_image(_big_jpeg(), min_side=128).image.size == (250, 188)


def test_min_side_keeps_orientation_and_full_oriented_size():
    decoded = decode_image(_big_jpeg(orientation=6), min_side=448)
    assert (decoded.width, decoded.height) == (1500, 2000)
    assert decoded.image.size == (750, 1000)


def test_min_side_leaves_small_and_non_jpeg_images_alone():
    assert decode_image(_big_jpeg(size=(600, 400)), min_side=448).image.size == (600, 400)
    buffer = io.BytesIO()
    pattern_image(3, size=(2000, 1500)).save(buffer, format="PNG")
    assert decode_image(buffer.getvalue(), min_side=448).image.size == (2000, 1500)
