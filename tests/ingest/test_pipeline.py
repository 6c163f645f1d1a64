"""Ingest's pipeline: workers read, decode and resize a chunk of files, then the model embeds while no worker
runs; the vectors are exactly what the encoder gives each image on its own."""

from __future__ import annotations

import threading
import time

import numpy as np

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


def test_ingested_vectors_are_what_the_encoder_gives_each_image_alone(store, tmp_path):
    paths = _folder(tmp_path / "photos", 11)
    report = _ingest(store, tmp_path / "photos", batch_size=4, workers=2)
    assert (report.added, report.duplicates, report.failed) == (11, 1, ())

    rows = tables.read_columns(store.db.open_table(layout.FILES), ["path", "image_id"]).to_pylist()
    image_of = {row["path"]: row["image_id"] for row in rows}
    images = tables.read_columns(store.db.open_table(layout.IMAGES), ["id", "embedding"]).to_pylist()
    stored = {row["id"]: np.asarray(row["embedding"], dtype=np.float32) for row in images}
    for path in paths:
        alone = store.encoder.encode_images([load_image(path, min_side=store.model.decode_min_side).image])[0]
        assert float(stored[image_of[str(path)]] @ alone) >= 0.9999, path  # bf16 here: batch size moves the last digits


def test_no_file_is_decoded_while_the_model_runs(store, tmp_path, monkeypatch):
    """The forward pass has every core; a worker decoding beside it would stall torch's threads."""
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

    def spied_encode_prepared(self, prepared):
        with lock:
            state["reading_during_embed"].append(state["reading"])
        state["embedded"].append(len(prepared))
        return encode_prepared(self, prepared)

    monkeypatch.setattr(FolderIngest, "_read_one", spied_read_one)
    monkeypatch.setattr(ClipEncoder, "encode_prepared", spied_encode_prepared)
    report = _ingest(store, tmp_path / "photos", batch_size=4, workers=2)

    assert report.added == 13 and report.duplicates == 1
    assert state["most_reading"] == 2  # the workers do run in parallel
    assert sum(state["embedded"]) == 13 and max(state["embedded"]) == 4  # batches of batch_size
    assert state["reading_during_embed"] == [0] * len(state["embedded"])  # ...but never beside the model
