"""Migrations fixed in time: a store built by any prefix of the migrations, then opened, equals a new store.

For every k, a store gets only the first k migrations (through the real runner), some rows in each table its
schema has at that point (near-duplicate prompts while the dedup migration is still pending), and is then
opened with `clipstore.connect`, which applies the rest. Every table must then have exactly the schema of a
brand-new store's table AND the one the live helpers (`layout.images_schema`, `heads.heads_schema`, ...)
give for tables made at run time: a live helper edited without a new migration fails here. The rows survive.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import clipstore
from clipstore.db import layout, migrate, tables
from clipstore.prompts.dedup import reference_deduplicate
from clipstore.encoders.minilm import load_minilm_encoder
from clipstore.db.layout import HEADS_TABLE, heads_schema
from clipstore.encoders.identity import resolve_model
from clipstore.prompts.bank import prompt_id
from sample_prompts import BLUE, OTHER, RED, RED_PARAPHRASE

MINI = "clipstore-mini"
MIGRATIONS = migrate.available_migrations()
DEDUP = "0003_prompt_dedup"
BANK = [RED, BLUE, RED_PARAPHRASE, OTHER]  # in insertion order; the paraphrase is a near-duplicate of RED
KEPT = [RED, BLUE, OTHER]
MARKER = {"key": "test_marker", "value": "kept"}


def live_schemas(model, store_path) -> dict[str, pa.Schema]:
    """Every table of a store, with the schema its live helper gives (what run-time code creates)."""
    return {
        layout.IMAGES: layout.images_schema(model, str(store_path)),
        layout.FILES: layout.files_schema(),
        layout.PROMPTS: layout.prompts_schema(model, str(store_path)),
        layout.SETTINGS: layout.settings_schema(),
        layout.MIGRATIONS: layout.migrations_schema(),
        HEADS_TABLE: heads_schema(),
    }


def shape(schema: pa.Schema):
    """A schema as comparable, readable data: every field's name, type, nullability and metadata, and the
    schema's metadata."""
    return [(f.name, f.type, f.nullable, f.metadata) for f in schema], schema.metadata


@pytest.fixture(scope="module")
def model():
    return resolve_model(MINI)


@pytest.fixture(scope="module")
def new_store(tmp_path_factory) -> "clipstore.Store":
    return clipstore.connect(tmp_path_factory.mktemp("new") / "new.clipstore", model=MINI)


@pytest.fixture(scope="module")
def bank_minilm() -> np.ndarray:
    return load_minilm_encoder().encode(BANK)


def rows_for(model, bank_minilm: np.ndarray, pending_dedup: bool) -> dict[str, dict[str, list]]:
    """Rows for every table, with every column any migration gives it; a table gets the columns it has."""
    rng = np.random.default_rng(0)

    def unit(n: int, dim: int) -> list:
        vectors = rng.normal(size=(n, dim)).astype(np.float32)
        return list(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))

    now = tables.utc_now()
    texts = BANK if pending_dedup else KEPT
    minilm = [bank_minilm[BANK.index(text)] for text in texts]
    image_ids = [f"{i:064x}" for i in (1, 2, 3)]
    return {
        layout.IMAGES: {
            "id": image_ids,
            "width": [64, 80, 32],
            "height": [48, 80, 32],
            "format": ["PNG", "JPEG", "WEBP"],
            "embedding": unit(3, model.embed_dim),
            "added_at": [now] * 3,
            "prompt": [RED, None, BLUE],
            "prompt_source": ["png:parameters", None, "png:prompt"],
            "prompt_offered": [True, None, False],
            "first_path": ["a/one copy.png", None, "ünï/three.webp"],
        },
        layout.FILES: {
            "path": ["a/one.png", "a/one copy.png", "b/two.jpg", "ünï/three.webp"],
            "size": [100, 100, 2000, 30],
            "mtime_ns": [1, 2, 3, 4],
            "image_id": [image_ids[0], image_ids[0], image_ids[1], image_ids[2]],
            "ingested_at": [now] * 4,
        },
        layout.PROMPTS: {
            "id": [prompt_id(text) for text in texts],
            "seq": list(range(len(texts))),
            "text": texts,
            "clip_embedding": unit(len(texts), model.embed_dim),
            "minilm_embedding": minilm,
            "source": ["old"] * len(texts),
            "added_at": [now] * len(texts),
        },
        layout.SETTINGS: {name: [value] for name, value in MARKER.items()},
        HEADS_TABLE: {
            "id": ["head-1"],
            "created_at": [now],
            "folder": ["heads/head-1"],
            "base_model": [model.to_json()],
            "validation_avg_cos": [0.61],
            "ensemble_alpha": [0.4],
            "config": ["{}"],
        },
    }


def build_old_store(path: Path, k: int, model, monkeypatch) -> lancedb.DBConnection:
    """A store as the first k migrations left it, made by the real runner."""
    db = lancedb.connect(path)
    with monkeypatch.context() as patch:
        patch.setattr(migrate, "available_migrations", lambda: MIGRATIONS[:k])
        assert migrate.apply_pending(migrate.MigrationContext(db, str(path), model)) == [m.name for m in MIGRATIONS[:k]]
    return db


def fill(db: lancedb.DBConnection, rows: dict[str, dict[str, list]]) -> dict[str, pa.Table]:
    """Add the rows to every table the store has, only the columns it has; returns what was written."""
    written = {}
    for name in sorted(tables.table_names(db) & set(rows)):
        table = db.open_table(name)
        data = pa.table({column: rows[name][column] for column in table.schema.names}, schema=table.schema)
        table.add(data)
        written[name] = data
    return written


def sorted_rows(table: pa.Table) -> list[dict]:
    key = table.column_names[0]
    return sorted(table.to_pylist(), key=lambda row: row[key])


@pytest.mark.parametrize("k", range(len(MIGRATIONS) + 1), ids=lambda k: f"after_{k}_migrations")
def test_a_store_migrated_from_any_earlier_layout_equals_a_new_store(k, tmp_path, model, new_store, bank_minilm, monkeypatch):
    path = tmp_path / "old.clipstore"
    pending_dedup = DEDUP not in {m.name for m in MIGRATIONS[:k]}
    written = fill(build_old_store(path, k, model, monkeypatch), rows_for(model, bank_minilm, pending_dedup))
    assert (layout.PROMPTS in written) == (k >= 2) and (layout.IMAGES in written) == (k >= 1)

    migrated = clipstore.connect(path, model=MINI)

    assert [m.name for m in migrated.migrations() if m.applied] == [m.name for m in MIGRATIONS]
    new_db, old_db = new_store.db, migrated.db
    live = live_schemas(model, path)
    assert tables.table_names(old_db) == tables.table_names(new_db) == set(live)
    for name, schema in live.items():
        assert shape(old_db.open_table(name).schema) == shape(new_db.open_table(name).schema), name
        assert shape(old_db.open_table(name).schema) == shape(schema), name

    for name, before in written.items():
        if name == layout.SETTINGS:
            continue  # migrations add settings: compared as a whole below
        after = old_db.open_table(name).to_arrow()
        if name == layout.PROMPTS:
            before = before.filter(pc.is_in(before.column("text"), pa.array(KEPT)))
        assert sorted_rows(after.select(before.column_names)) == sorted_rows(before), name
        added = [column for column in after.column_names if column not in before.column_names]
        assert all(after.column(column).null_count == len(after) for column in added), (name, added)
    if k >= 2:
        assert [p.text for p in migrated.list_prompts()] == KEPT
    settings = {row["key"]: row["value"] for row in old_db.open_table(layout.SETTINGS).to_arrow().to_pylist()}
    new_settings = {row["key"]: row["value"] for row in new_db.open_table(layout.SETTINGS).to_arrow().to_pylist()}
    assert settings == new_settings | ({MARKER["key"]: MARKER["value"]} if k >= 2 else {})
    assert migrated.prompt_dedup_threshold() == 0.85


def test_the_model_identity_is_recorded_with_the_images_and_the_prompts(tmp_path, model, monkeypatch):
    db = build_old_store(tmp_path / "old.clipstore", len(MIGRATIONS), model, monkeypatch)
    for name in (layout.IMAGES, layout.PROMPTS):
        assert db.open_table(name).schema.metadata == {b"clipstore.model": model.to_json().encode()}
        assert tables.stored_model(db.open_table(name)) == model


def _dedup_migration():
    return importlib.import_module(f"{migrate.MIGRATIONS_PACKAGE}.{DEDUP}")


def test_the_dedup_migration_drops_only_rows_near_an_earlier_kept_row():
    # On a circle: B is 30 degrees from A (cosine 0.866), C 30 degrees from B but 60 from A (0.5), D 30 from C.
    angles = np.radians([0, 30, 60, 90, 180, 181])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    kept = _dedup_migration().kept_in_insertion_order(vectors, 0.85)
    # B is near A: dropped. C is near B only, and B was dropped: kept. D is near C: dropped.
    assert kept.tolist() == [True, False, True, False, True, False]


@pytest.mark.parametrize("block", [1, 7, 2048])
def test_the_dedup_migration_matches_the_definition_across_blocks(block):
    rng = np.random.default_rng(block)
    centres = rng.normal(size=(25, 24))
    vectors = np.repeat(centres, 16, axis=0) + 0.3 * rng.normal(size=(400, 24))
    vectors = rng.permutation(vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    expected = reference_deduplicate(vectors, None, 0.85)
    assert 25 <= expected.sum() < 300  # many near-duplicates, chains included
    assert _dedup_migration().kept_in_insertion_order(vectors, 0.85, block=block).tolist() == expected.tolist()


def test_dedup_migration_cleans_an_existing_bank_and_records_the_threshold(store, store_path):
    # Put the store back to before migration 0003 and fill the bank with near-duplicates behind its back.
    store.db.open_table(layout.MIGRATIONS).delete("name = '0003_prompt_dedup'")
    store.db.open_table(layout.SETTINGS).delete("key = 'prompt_dedup_threshold'")
    texts = [RED, RED_PARAPHRASE, BLUE, OTHER, RED]
    minilm = store.minilm.encode(texts)
    clip = store.encoder.encode_texts(texts)
    table = store.db.open_table(layout.PROMPTS)
    table.add(
        pa.table(
            {
                "id": [f"raw{i}" for i in range(len(texts))],
                "seq": np.arange(len(texts), dtype=np.int64),
                "text": texts,
                "clip_embedding": pa.FixedSizeListArray.from_arrays(pa.array(clip.reshape(-1)), clip.shape[1]),
                "minilm_embedding": pa.FixedSizeListArray.from_arrays(pa.array(minilm.reshape(-1)), 384),
                "source": ["old"] * len(texts),
                "added_at": pa.array([tables.utc_now()] * len(texts), pa.timestamp("us", tz="UTC")),
            },
            schema=table.schema,
        )
    )
    assert clipstore.connect(store_path, apply_migrations=False).prompt_dedup_threshold() is None

    reopened = clipstore.connect(store_path)
    assert reopened.prompt_dedup_threshold() == 0.85
    assert [p.text for p in reopened.list_prompts()] == [RED, BLUE, OTHER]
    dedup = [m for m in reopened.migrations() if m.name == "0003_prompt_dedup"]
    assert len(dedup) == 1 and dedup[0].applied
