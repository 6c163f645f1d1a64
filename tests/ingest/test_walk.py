"""Walking a folder during ingest: the store inside it skipped, unreadable folders and non-UTF-8 names reported."""

from __future__ import annotations

import os

import clipstore
from image_factory import pattern_image, write_image


def test_store_inside_the_ingested_folder_is_not_walked(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "x.png", pattern_image(1))
    store = clipstore.connect(root / "store.clipstore", model="clipstore-mini")
    report = store.ingest(root)
    assert report.added == 1 and report.failed == ()


def test_unreadable_folder_is_reported_not_fatal(store, photo_folder, monkeypatch):
    locked = photo_folder / "locked"
    write_image(locked / "x.png", pattern_image(50))
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path) == str(locked):  # chmod 000 does not stop root, so refuse the way the OS would
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr("clipstore.ingest.walk.os.scandir", scandir)
    report = store.ingest(photo_folder)
    assert report.added == 6
    assert [(f.path, f.reason) for f in report.failed] == [(str(locked), "cannot read folder: Permission denied")]


def test_non_utf8_file_name_is_reported_and_the_rest_ingested(store, photo_folder):
    import json

    weird = os.fsdecode(b"caf\xe9.png")  # Latin-1 name: not valid UTF-8
    write_image(photo_folder / weird, pattern_image(77))
    report = store.ingest(photo_folder)
    assert report.added == 6
    (failure,) = report.failed
    assert failure.path.endswith("caf\\xe9.png") and "UTF-8" in failure.reason
    json.dumps(report.to_dict())  # printable as JSON
