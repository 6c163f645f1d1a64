"""Ingest: messy folders, incremental re-runs, changes, prune, and crash recovery — through the real store."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

import clipstore
from clipstore.db import layout, tables
from clipstore.ingest.run import FolderIngest
from image_factory import pattern_image, write_image, write_oversized_png


def _file_rows(store) -> dict[str, dict]:
    rows = tables.read_columns(store.db.open_table(layout.FILES), ["path", "size", "mtime_ns", "image_id"]).to_pylist()
    return {row["path"]: row for row in rows}


def _image_rows(store) -> dict[str, dict]:
    rows = tables.read_columns(store.db.open_table(layout.IMAGES), ["id", "width", "height", "format"]).to_pylist()
    return {row["id"]: row for row in rows}


def test_messy_folder_ingests_every_good_image_once_and_reports_every_bad_file(store, messy):
    report = store.ingest(messy["root"])

    failed = {Path(f.path): f.reason for f in report.failed}
    assert set(failed) == set(messy["bad"])
    assert "empty" in failed[messy["root"] / "broken" / "empty.jpg"]
    assert "not an image" in failed[messy["root"] / "broken" / "fake.jpg"]
    assert "truncated" in failed[messy["root"] / "broken" / "truncated.jpg"]
    assert report.added == messy["expected_distinct_images"]
    assert report.duplicates == len(messy["duplicate_of"])

    files = _file_rows(store)
    images = _image_rows(store)
    expected_paths = {str(p) for p in messy["good"]} | {str(p) for p in messy["duplicate_of"]}
    assert set(files) == expected_paths  # nothing from bad, ignored, or through the symlink loop
    assert len(images) == messy["expected_distinct_images"]
    for copy, original in messy["duplicate_of"].items():
        assert files[str(copy)]["image_id"] == files[str(original)]["image_id"]
    assert str(messy["unicode_name"]) in files
    rotated = images[files[str(messy["exif_rotated"])]["image_id"]]
    assert (rotated["width"], rotated["height"]) == (40, 80)


def test_image_id_is_sha256_of_the_bytes(store, photo_folder):
    import hashlib

    store.ingest(photo_folder)
    for path, row in _file_rows(store).items():
        assert row["image_id"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_reingest_skips_everything_without_reading(store, photo_folder, monkeypatch):
    first = store.ingest(photo_folder)
    assert first.added == 6
    version = store.db.open_table(layout.IMAGES).version

    def no_reading(self, found):
        raise AssertionError(f"unchanged file {found.path} was read")

    monkeypatch.setattr(FolderIngest, "_read_one", no_reading)
    second = store.ingest(photo_folder)
    assert (second.added, second.skipped_unchanged, second.updated, second.failed) == (0, 6, 0, ())
    assert store.db.open_table(layout.IMAGES).version == version  # no write at all
    assert store.count_images() == 6


def test_modified_file_is_reembedded_and_old_vector_dropped(store, photo_folder):
    store.ingest(photo_folder)
    target = photo_folder / "a" / "img1.png"
    old_id = _file_rows(store)[str(target)]["image_id"]
    write_image(target, pattern_image(99))
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))

    report = store.ingest(photo_folder)
    assert (report.updated, report.added, report.skipped_unchanged) == (1, 0, 5)
    new_id = _file_rows(store)[str(target)]["image_id"]
    assert new_id != old_id
    images = _image_rows(store)
    assert old_id not in images and new_id in images
    assert store.search_image(target, k=1)[0].path == str(target)


def test_touched_file_with_same_bytes_is_not_reembedded(store, photo_folder):
    store.ingest(photo_folder)
    target = photo_folder / "b" / "img0.png"
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 5 * 10**9))
    report = store.ingest(photo_folder)
    assert (report.added, report.updated, report.skipped_unchanged) == (0, 0, 6)
    assert _file_rows(store)[str(target)]["mtime_ns"] == target.stat().st_mtime_ns


def test_rename_costs_no_reembedding(store, photo_folder):
    store.ingest(photo_folder)
    before = _image_rows(store)
    (photo_folder / "a" / "img1.png").rename(photo_folder / "a" / "renamed.png")
    report = store.ingest(photo_folder, prune=True)
    assert (report.added, report.duplicates, report.pruned) == (0, 1, 1)
    assert _image_rows(store).keys() == before.keys()
    assert str(photo_folder / "a" / "renamed.png") in _file_rows(store)


def test_prune_removes_vanished_files_and_their_images(store, photo_folder):
    store.ingest(photo_folder)
    gone = photo_folder / "b" / "img2.png"
    gone_id = _file_rows(store)[str(gone)]["image_id"]
    gone.unlink()

    without_prune = store.ingest(photo_folder)
    assert without_prune.pruned == 0 and str(gone) in _file_rows(store)

    report = store.ingest(photo_folder, prune=True)
    assert report.pruned == 1
    assert str(gone) not in _file_rows(store)
    assert gone_id not in _image_rows(store)
    assert all(hit.path != str(gone) for hit in store.search_text("anything", k=10))


def test_prune_is_limited_to_the_ingested_folder(store, tmp_path):
    first = tmp_path / "first"
    second = tmp_path / "second"
    write_image(first / "x.png", pattern_image(1))
    write_image(second / "y.png", pattern_image(2))
    store.ingest(first)
    store.ingest(second)
    shutil.rmtree(first)
    report = store.ingest(second, prune=True)
    assert report.pruned == 0
    assert str(first / "x.png") in _file_rows(store)


def test_file_that_turns_corrupt_loses_its_stale_row(store, photo_folder):
    store.ingest(photo_folder)
    target = photo_folder / "a" / "img3.png"
    target.write_bytes(b"not an image any more")
    report = store.ingest(photo_folder)
    assert [f.path for f in report.failed] == [str(target)]
    assert str(target) not in _file_rows(store)
    assert store.count_images() == 5


def test_megapixel_guard_reports_large_images(store, tmp_path):
    folder = tmp_path / "big"
    write_oversized_png(folder / "huge.png", megapixels=2.5)
    write_image(folder / "small.png", pattern_image(1))
    report = store.ingest(folder, max_megapixels=1.0)
    assert report.added == 1
    assert len(report.failed) == 1 and "megapixel" in report.failed[0].reason
    assert store.ingest(folder, max_megapixels=5.0).added == 1  # accepted once the limit allows it


def test_missing_folder_is_a_clear_error(store, tmp_path):
    with pytest.raises(clipstore.SourceNotFoundError, match="no such file or folder"):
        store.ingest(tmp_path / "does-not-exist")


def test_crash_midway_then_rerun_finishes_with_no_duplicate_or_lost_rows(store, tmp_path, monkeypatch):
    folder = tmp_path / "many"
    for seed in range(40):
        write_image(folder / f"{seed:02d}.png", pattern_image(seed))
    write_image(folder / "dup.png", pattern_image(3))

    commits = {"n": 0}
    original_commit = FolderIngest._commit

    def crashing_commit(self):
        # Crash on the second commit, after image rows are written but before their file rows are.
        commits["n"] += 1
        if commits["n"] == 2:
            self._embed_pending()
            import pyarrow as pa

            rows = pa.Table.from_pylist(self._image_rows, schema=self.images.schema)
            self.images.merge_insert("id").when_not_matched_insert_all().execute(rows)
            raise KeyboardInterrupt("killed")
        original_commit(self)

    monkeypatch.setattr(FolderIngest, "_commit", crashing_commit)
    with pytest.raises(KeyboardInterrupt):
        _ingest_small_commits(store, folder)
    partial_files = len(_file_rows(store))
    assert 0 < partial_files < 41

    monkeypatch.setattr(FolderIngest, "_commit", original_commit)
    report = store.ingest(folder)
    files = _file_rows(store)
    images = _image_rows(store)
    assert len(files) == 41
    assert len(images) == 40
    assert store.db.open_table(layout.IMAGES).count_rows() == 40  # no duplicate image rows
    assert report.added + report.duplicates == 41 - partial_files
    assert report.skipped_unchanged == partial_files


def _ingest_small_commits(store, folder):
    from clipstore.ingest.run import IngestOptions
    from clipstore.db.locking import write_lock

    with write_lock(store.path):
        run = FolderIngest(store.db, lambda: store.encoder, str(folder), options=IngestOptions(batch_size=4, commit_every=8))
        return run.run()


def test_symlink_whose_target_vanished_loses_its_row(store, tmp_path):
    folder = tmp_path / "linked"
    target = write_image(tmp_path / "elsewhere" / "t.png", pattern_image(8))
    write_image(folder / "real.png", pattern_image(9))
    (folder / "link.png").symlink_to(target)
    store.ingest(folder)
    assert str(folder / "link.png") in _file_rows(store)
    target.unlink()
    report = store.ingest(folder)
    assert [f.path for f in report.failed] == [str(folder / "link.png")]
    assert str(folder / "link.png") not in _file_rows(store)
    assert store.count_images() == 1


def test_changed_file_whose_new_bytes_are_already_stored_counts_as_updated(store, photo_folder):
    store.ingest(photo_folder)
    target = photo_folder / "a" / "img1.png"
    target.write_bytes((photo_folder / "b" / "img0.png").read_bytes())
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    report = store.ingest(photo_folder)
    assert (report.updated, report.added, report.duplicates) == (1, 0, 0)
    assert store.count_images() == 5


def test_prune_of_a_deleted_folder_removes_its_rows(store, tmp_path):
    keep, gone = tmp_path / "keep", tmp_path / "gone"
    write_image(keep / "k.png", pattern_image(1))
    write_image(gone / "g.png", pattern_image(2))
    store.ingest(keep)
    store.ingest(gone)
    shutil.rmtree(gone)
    with pytest.raises(clipstore.SourceNotFoundError):
        store.ingest(gone)
    report = store.ingest(gone, prune=True)
    assert report.pruned == 1 and set(_file_rows(store)) == {str(keep / "k.png")}
    assert store.count_images() == 1


def test_prune_keeps_rows_under_a_folder_that_is_only_unreadable(store, photo_folder, monkeypatch):
    store.ingest(photo_folder)
    locked = photo_folder / "a"
    real_scandir, real_exists = os.scandir, os.path.exists

    def scandir(path):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr("clipstore.ingest.walk.os.scandir", scandir)
    monkeypatch.setattr("clipstore.ingest.run.os.path.exists", lambda p: False if str(p).startswith(str(locked)) else real_exists(p))
    report = store.ingest(photo_folder, prune=True)
    assert report.pruned == 0
    assert len(_file_rows(store)) == 6
