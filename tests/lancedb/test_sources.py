"""clipstore.lancedb.sources: image column values (paths, file:// URIs, bytes) read like everywhere in clipstore."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipstore.errors import InvalidImageError
from clipstore.lancedb.sources import NULL_IMAGE, describe_value, load_source, map_in_threads
from image_factory import pattern_image, write_image, write_text_as_image


def test_paths_uris_bytes_and_pil_images_decode_to_the_same_picture(tmp_path):
    path = write_image(tmp_path / "ä b" / "photo.png", pattern_image(3))
    expected = load_source(str(path)).image
    for value in (path, path.as_uri(), path.read_bytes(), bytearray(path.read_bytes()), Image.open(path)):
        decoded = load_source(value)
        assert decoded.image.mode == "RGB" and np.array_equal(np.asarray(decoded.image), np.asarray(expected)), value


def test_a_relative_path_is_read_from_the_working_directory(tmp_path, monkeypatch):
    write_image(tmp_path / "img" / "a.png", pattern_image(1))
    monkeypatch.chdir(tmp_path)
    assert load_source("img/a.png").width == 96


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, NULL_IMAGE),
        ("", "the path is empty"),
        ("missing.png", "no such file"),
        ("s3://bucket/a.png", "not s3:// URIs"),
        ("https://example.com/a.png", "not https:// URIs"),
        ("file://otherhost/a.png", "must name a local file"),
        (b"", "empty file"),
        (b"plain text, not pixels", "not an image"),
        (42, "not an image value (int)"),
    ],
)
def test_values_that_are_not_images_say_why(value, reason, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidImageError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        load_source(value)


def test_a_text_file_named_like_an_image_is_refused_by_content(tmp_path):
    with pytest.raises(InvalidImageError, match="looks like text"):
        load_source(write_text_as_image(tmp_path / "notes.jpg"))


def test_messages_name_values_briefly_and_threads_keep_the_order():
    assert describe_value(b"1234") == "<4 bytes>" and describe_value("a/b.png") == "a/b.png"
    assert map_in_threads(lambda x: x * 2, list(range(50))) == [x * 2 for x in range(50)]
