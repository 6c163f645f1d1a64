"""Ingest's pipeline: lanes read, decode and resize a chunk of files in worker threads, then embed it (one lane:
while no worker runs; two lanes: one decodes while the other embeds, each on its share of the cores); the
vectors are what the encoder gives each image on its own, and the store is the same whatever lane ends first."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from clipstore.db import layout, tables
from clipstore.db.locking import write_lock
from clipstore.encoders.clip import ClipEncoder
from clipstore.imaging import load_image
from clipstore.ingest.run import FolderIngest, IngestOptions
from image_factory import pattern_image, write_image


def _folder(root, n):
    """n distinct images of several sizes and formats (one big JPEG, decoded at reduced scale), plus a copy."""
    paths = []
    for seed in range(n):
        size = (1600, 1200) if seed == 0 else (120 + 7 * seed, 90 + 3 * seed)
        fmt = "JPEG" if seed % 3 == 0 else "PNG"
        paths.append(write_image(root / f"{seed:02d}.{fmt.lower()}", pattern_image(seed, size=size), format=fmt))
    write_image(root / "copy.png", pattern_image(1, size=(127, 93)))
    return paths


def _ingest(store, folder, **options):
    with write_lock(store.path):
        return FolderIngest(store.db, lambda: store.encoder, str(folder), options=IngestOptions(**options)).run()


@pytest.mark.parametrize("lanes", [1, 2])
def test_ingested_vectors_are_what_the_encoder_gives_each_image_alone(store, tmp_path, lanes):
    paths = _folder(tmp_path / "photos", 11)
    report = _ingest(store, tmp_path / "photos", batch_size=4, workers=2, lanes=lanes)
    assert (report.added, report.duplicates, report.failed) == (11, 1, ())

    rows = tables.read_columns(store.db.open_table(layout.FILES), ["path", "image_id"]).to_pylist()
    image_of = {row["path"]: row["image_id"] for row in rows}
    images = tables.read_columns(store.db.open_table(layout.IMAGES), ["id", "embedding"]).to_pylist()
    stored = {row["id"]: np.asarray(row["embedding"], dtype=np.float32) for row in images}
    for path in paths:
        alone = store.encoder.encode_images([load_image(path, min_side=store.model.decode_min_side).image])[0]
        assert float(stored[image_of[str(path)]] @ alone) >= 0.9999, path  # bf16 here: batch size moves the last digits


def test_one_lane_decodes_no_file_while_the_model_runs(store, tmp_path, monkeypatch):
    """With one lane the forward pass has every core; a worker decoding beside it would stall torch's threads."""
    _folder(tmp_path / "photos", 13)
    lock = threading.Lock()
    state = {"reading": 0, "most_reading": 0, "reading_during_embed": [], "embedded": []}
    read_one, encode_prepared = FolderIngest._read_one, ClipEncoder.encode_prepared

    def spied_read_one(self, found):
        with lock:
            state["reading"] += 1
            state["most_reading"] = max(state["most_reading"], state["reading"])
        try:
            time.sleep(0.02)  # long enough for both workers to be busy at once
            return read_one(self, found)
        finally:
            with lock:
                state["reading"] -= 1

    def spied_encode_prepared(self, prepared, **kwargs):
        with lock:
            state["reading_during_embed"].append(state["reading"])
        state["embedded"].append(len(prepared))
        return encode_prepared(self, prepared, **kwargs)

    monkeypatch.setattr(FolderIngest, "_read_one", spied_read_one)
    monkeypatch.setattr(ClipEncoder, "encode_prepared", spied_encode_prepared)
    report = _ingest(store, tmp_path / "photos", batch_size=4, workers=2, lanes=1)

    assert report.added == 13 and report.duplicates == 1
    assert state["most_reading"] == 2  # the workers do run in parallel
    assert sum(state["embedded"]) == 13 and max(state["embedded"]) == 4  # batches of batch_size
    assert state["reading_during_embed"] == [0] * len(state["embedded"])  # ...but never beside the model


def _stored(store):
    files = tables.read_columns(store.db.open_table(layout.FILES), ["path", "image_id"]).to_pylist()
    images = tables.read_columns(store.db.open_table(layout.IMAGES), ["id", "embedding", layout.FIRST_PATH]).to_pylist()
    return (
        sorted((row["path"].rsplit("/", 1)[1], row["image_id"]) for row in files),
        {row["id"]: (np.asarray(row["embedding"]), row[layout.FIRST_PATH].rsplit("/", 1)[1]) for row in images},
    )


def test_two_lanes_embed_at_once_on_a_share_of_the_cores_and_commit_in_walk_order(store_path, tmp_path, monkeypatch):
    """Lane 2 runs its forward pass while lane 1 is still in its own (each with half the cores' torch threads),
    and the lane that finishes first does not reorder anything: the store is the one-lane store."""
    import torch

    import clipstore

    _folder(tmp_path / "photos", 13)
    one_lane = clipstore.connect(store_path.parent / "one.clipstore", model="clipstore-mini")
    one_report = _ingest(one_lane, tmp_path / "photos", batch_size=4, workers=2, lanes=1)

    encode_prepared = ClipEncoder.encode_prepared
    lock = threading.Lock()
    second_started, second_finished = threading.Event(), threading.Event()
    calls: list[dict] = []

    def spied_encode_prepared(self, prepared, **kwargs):
        with lock:
            call = len(calls)
            calls.append({"threads": torch.get_num_threads(), "images": len(prepared), **kwargs})
        if call == 0:  # the first chunk waits until the second lane has run a whole forward pass
            calls[0]["overlapped"] = second_started.wait(timeout=60) and second_finished.wait(timeout=60)
        if call == 1:
            second_started.set()
        try:
            return encode_prepared(self, prepared, **kwargs)
        finally:
            if call == 1:
                second_finished.set()

    main_threads = torch.get_num_threads()
    monkeypatch.setattr(ClipEncoder, "encode_prepared", spied_encode_prepared)
    two_lanes = clipstore.connect(store_path, model="clipstore-mini")
    report = _ingest(two_lanes, tmp_path / "photos", batch_size=4, workers=2, lanes=2)

    assert calls[0]["overlapped"] is True  # chunk 2 was embedded, start to end, while chunk 1's lane waited
    assert all(call["concurrent"] for call in calls)
    assert {call["threads"] for call in calls} == {max(1, main_threads // 2)}
    assert max(call["images"] for call in calls) == 2  # the batch of 4 is shared between the two lanes
    assert torch.get_num_threads() == main_threads  # this thread's torch threads are as they were
    assert report == one_report
    files, images = _stored(two_lanes)
    one_files, one_images = _stored(one_lane)
    assert files == one_files and images.keys() == one_images.keys()
    for image_id, (vector, first_path) in images.items():
        assert first_path == one_images[image_id][1]
        assert float(vector @ one_images[image_id][0]) >= 0.9999  # bf16 here: thread counts move the last digits
