"""Image bytes by id only (never by a path from the request), checked against the id; thumbnails and previews made
with ingest's safeguards (EXIF orientation, the megapixel guard) and cached on disk."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

import clipstore
from image_factory import write_oversized_png
from clipstore.serve.images import CACHE_FOLDER

JSON = {"Accept": "application/json"}


def _rotated(world):
    path = Path(world.path).parent / "photos" / "rotated.jpg"
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_stored_bytes_are_served_by_id(client, world):
    hit = world.search_text("a blue circle", k=1)[0]
    response = client.get(f"/image/{hit.id}/file")
    assert response.status_code == 200 and response.content == Path(hit.path).read_bytes()
    assert response.headers["content-type"] == "image/png" and response.headers["x-content-type-options"] == "nosniff"
    assert Path(hit.path).name in response.headers["content-disposition"]
    path, image_id = _rotated(world)
    assert client.get(f"/image/{image_id}/file").headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    "url",
    [
        "/image/..%2F..%2F..%2Fetc%2Fpasswd/file",
        "/image/%2Fetc%2Fpasswd/file",
        "/image/..%252F..%252Fetc%252Fpasswd/file",
        "/image/" + "0" * 64 + "/file",
        "/image/" + "A" * 64 + "/file",  # ids are lowercase hex
        "/image/" + "0" * 63 + "/thumb",
        "/image/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2F..%2Fapp.py",
        "/static/%2e%2e/app.py",
        "/static/../../../../etc/passwd",
    ],
)
def test_no_path_from_the_request_reaches_a_file(client, url):
    response = client.get(url)
    assert response.status_code == 404, (url, response.status_code)
    assert b"root:" not in response.content and b"def create_app" not in response.content


def test_a_file_that_changed_since_ingest_is_not_served(client_for, plain, tmp_path):
    client = client_for(plain)
    hit = plain.search_text("a pattern", k=1)[0]
    assert client.get(f"/image/{hit.id}/thumb").status_code == 200  # cached now, under the content's id
    Path(hit.path).write_bytes(Path(hit.path).read_bytes() + b"changed")
    response = client.get(f"/image/{hit.id}/file")
    assert response.status_code == 410 and "changed or went away since it was ingested" in response.text
    assert hit.path in response.text
    assert client.get(f"/image/{hit.id}/preview").status_code == 410  # never made: the bytes are not the image's
    assert client.get(f"/image/{hit.id}/thumb").status_code == 200  # made from the right bytes before
    assert client.get(f"/image/{hit.id}/describe").status_code == 410
    Path(hit.path).unlink()
    assert client.get(f"/image/{hit.id}/file", headers=JSON).json()["status"] == 410


def test_a_copy_with_the_same_bytes_is_served_when_the_first_path_changed(client_for, plain, tmp_path):
    hit = plain.search_text("a pattern", k=1)[0]
    copy = Path(hit.path).with_name("zz-copy.png")
    shutil.copyfile(hit.path, copy)
    plain.ingest(copy.parent)
    original = Path(hit.path).read_bytes()
    Path(hit.path).write_bytes(b"not the image any more")
    response = client_for(plain).get(f"/image/{hit.id}/file")
    assert response.status_code == 200 and response.content == original
    assert "zz-copy.png" in response.headers["content-disposition"]


def test_thumbnails_and_previews_are_small_jpegs_cached_on_disk(client, world, tmp_path):
    hit = world.search_text("a red star", k=1)[0]
    for kind, size in (("thumb", 256), ("preview", 1024)):
        response = client.get(f"/image/{hit.id}/{kind}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        assert "immutable" in response.headers["cache-control"]
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.format == "JPEG" and max(image.size) <= size
        cached = tmp_path / "thumbnails" / CACHE_FOLDER / str(size) / hit.id[:2] / f"{hit.id}.jpg"
        assert cached.read_bytes() == response.content
    # The cache answers: a changed cached file is what is served (the content id says it cannot be stale).
    cached = tmp_path / "thumbnails" / CACHE_FOLDER / "256" / hit.id[:2] / f"{hit.id}.jpg"
    cached.write_bytes(cached.read_bytes() + b"\0")
    assert client.get(f"/image/{hit.id}/thumb").content.endswith(b"\0")


def test_renditions_follow_exif_orientation(client, world):
    path, image_id = _rotated(world)
    with Image.open(path) as stored:
        assert stored.size == (300, 120)  # stored landscape; EXIF orientation 6 shows it portrait
    for kind in ("thumb", "preview"):
        with Image.open(io.BytesIO(client.get(f"/image/{image_id}/{kind}").content)) as shown:
            width, height = shown.size
            assert height > width
            top, bottom = shown.convert("RGB").getpixel((width // 2, 5)), shown.convert("RGB").getpixel((width // 2, height - 5))
            assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # red on top, blue below
    record = world.image(image_id)
    assert (record.width, record.height) == (120, 300)


def test_the_megapixel_guard_applies_to_renditions_and_uploads(client_for, tmp_path):
    folder = tmp_path / "big"
    big = write_oversized_png(folder / "big.png", 2.5)
    store = clipstore.connect(tmp_path / "big.clipstore", model="clipstore-mini")
    assert store.ingest(folder).added == 1
    client = client_for(store, max_megapixels=1.0)
    image_id = hashlib.sha256(big.read_bytes()).hexdigest()
    response = client.get(f"/image/{image_id}/thumb")
    assert response.status_code == 422 and "over the 1 megapixel limit" in response.text
    upload = client.post("/upload", files={"image": ("big.png", big.read_bytes(), "image/png")})
    assert upload.status_code == 422 and "megapixel" in upload.text
    assert client.get(f"/image/{image_id}/file").status_code == 200  # the bytes themselves are not decoded
