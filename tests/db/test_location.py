"""Where a store lives (clipstore.paths, clipstore.db.location): local paths and object-store URIs told apart,
and a store's plain files saved, listed, read and copied locally on a real local S3 server."""

from __future__ import annotations

import os

import pytest

from clipstore.db.location import StoreLocation
from clipstore.errors import StorageError
from clipstore.paths import is_uri, join, store_location


@pytest.mark.parametrize(
    "location, uri",
    [
        ("s3://bucket/photos.clipstore", True),
        ("gs://bucket/x", True),
        ("az://container/x", True),
        ("s3+ddb://bucket/x", True),
        ("file:///tmp/x", False),
        ("/tmp/photos.clipstore", False),
        ("relative/store", False),
        ("C:\\stores\\photos", False),
        ("~/photos.clipstore", False),
    ],
)
def test_a_uri_has_a_scheme_other_than_file(location, uri):
    assert is_uri(location) is uri


def test_store_locations_keep_uris_and_make_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store_location("s3://bucket/photos.clipstore/") == "s3://bucket/photos.clipstore"
    assert store_location("here.clipstore") == str(tmp_path / "here.clipstore")
    assert store_location(f"file://{tmp_path}/x") == str(tmp_path / "x")
    assert join("s3://bucket/s", "heads", "h1") == "s3://bucket/s/heads/h1"
    assert join(str(tmp_path), "heads", "h1") == os.path.join(str(tmp_path), "heads", "h1")


def test_a_saved_folder_lands_whole_on_object_storage_config_last_and_reads_back(s3, tmp_path):
    location = StoreLocation(s3.uri(), s3.storage_options)
    final = location.join("heads", "h1")
    with location.saved_folder(final) as folder:
        assert not is_uri(folder)  # the body writes local files
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
            handle.write('{"id": "h1"}')
        with open(os.path.join(folder, "weights.bin"), "wb") as handle:
            handle.write(b"\x00\x01" * 1000)
        assert location.entries(location.join("heads")) == []  # nothing is uploaded before the body returns
    assert not os.path.exists(folder)
    assert s3.keys(location.root) == ["heads/h1/config.json", "heads/h1/weights.bin"]
    assert location.entries() == ["heads"]
    assert location.entries(location.join("heads")) == ["h1"]
    assert location.entries(final) == ["config.json", "weights.bin"]
    assert location.read_text(location.join("heads", "h1", "config.json")) == '{"id": "h1"}'
    assert location.is_file(location.join("heads", "h1", "weights.bin"))
    assert not location.is_file(location.join("heads", "h1", "missing.bin"))
    with pytest.raises(FileNotFoundError):
        location.read_text(location.join("heads", "h1", "missing.json"))
    local = location.local_copy(location.join("heads", "h1", "weights.bin"))
    assert not is_uri(local) and open(local, "rb").read() == b"\x00\x01" * 1000
    assert location.relative(final) == "heads/h1"


def test_a_folder_whose_body_fails_is_not_uploaded(s3):
    location = StoreLocation(s3.uri(), s3.storage_options)
    with pytest.raises(RuntimeError):
        with location.saved_folder(location.join("models", "m1")) as folder:
            with open(os.path.join(folder, "model.safetensors"), "wb") as handle:
                handle.write(b"half")
            raise RuntimeError("training crashed")
    assert s3.keys(location.root) == []


def test_a_missing_bucket_is_one_clear_storage_error(s3):
    with pytest.raises(StorageError) as excinfo:
        StoreLocation(f"s3://no-such-bucket-{os.getpid()}/store", s3.storage_options).entries()
    message = str(excinfo.value)
    assert "does not exist" in message and "no-such-bucket" in message and "\n" not in message


def test_an_unreachable_endpoint_is_one_clear_storage_error(s3):
    from object_storage import closed_port

    options = {**s3.storage_options, "aws_endpoint": f"http://127.0.0.1:{closed_port()}"}
    with pytest.raises(StorageError) as excinfo:
        StoreLocation(s3.uri(), options).entries()
    message = str(excinfo.value)
    assert message.startswith("Cannot reach the object storage of s3://") and "AWS_ENDPOINT" in message
    assert "\n" not in message


def test_local_stores_keep_their_files_in_the_folder(tmp_path):
    location = StoreLocation(str(tmp_path / "s.clipstore"))
    assert not location.remote and location.storage_options == {}
    final = location.join("models", "m1")
    with location.saved_folder(final) as folder:
        assert folder == final + ".partial"
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
            handle.write("{}")
    assert location.entries(location.join("models")) == ["m1"]
    assert location.local_copy(os.path.join(final, "config.json")) == os.path.join(final, "config.json")
    assert location.work_folder("heads", ".training-x") == os.path.join(location.root, "heads", ".training-x")
