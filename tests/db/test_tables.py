"""The tables of a store: the model identity kept with the images table, plain LanceDB tables underneath."""

from __future__ import annotations

import lancedb
import pytest

from clipstore.db import tables
from clipstore.encoders.identity import MINI_WEIGHTS_SHA256, MINI_WEIGHTS_TAG


def test_new_store_records_model_identity_with_the_images_table(store, store_path):
    table = lancedb.connect(store_path).open_table("images")
    identity = tables.stored_model(table)
    assert identity is not None
    assert (identity.architecture, identity.pretrained, identity.embed_dim) == ("clipstore-mini", MINI_WEIGHTS_TAG, 256)
    assert identity.checkpoint_sha256 == MINI_WEIGHTS_SHA256
    assert identity.image_size == 64 and len(identity.mean) == 3
    assert table.schema.field("embedding").type.list_size == 256


def test_tables_are_plain_lancedb_tables(store, store_path, photo_folder):
    store.ingest(photo_folder)
    db = lancedb.connect(store_path)
    images = db.open_table("images")
    query = images.to_arrow().column("embedding")[0].as_py()
    hits = images.search(query).distance_type("cosine").limit(1).to_list()
    assert hits[0]["_distance"] == pytest.approx(0.0, abs=1e-5)
    assert db.open_table("files").count_rows() == 6
