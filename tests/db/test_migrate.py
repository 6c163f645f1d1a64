"""The migration runner: migrations recorded once, pending ones listed then applied, newer stores refused."""

from __future__ import annotations

import lancedb
import pyarrow as pa
import pytest

import clipstore
from clipstore.db import layout, migrate, tables
from clipstore.store.facade import connect


def test_migrations_are_recorded_and_idempotent(store, store_path):
    statuses = store.migrations()
    assert [s.name for s in statuses][0] == "0001_create_tables"
    assert all(s.applied and s.applied_at for s in statuses)
    assert all(s.description for s in statuses)
    recorded = lancedb.connect(store_path).open_table("_clipstore_migrations").to_arrow().to_pylist()
    assert sorted(row["name"] for row in recorded) == [s.name for s in statuses]

    # Re-running every migration on an existing store changes nothing and records nothing twice.
    context = migrate.MigrationContext(store.db, store.path, store.model)
    for migration in migrate.available_migrations():
        migration.apply(context)
    assert migrate.apply_pending(context) == []
    clipstore.connect(store_path)
    recorded = lancedb.connect(store_path).open_table("_clipstore_migrations").to_arrow().to_pylist()
    assert len(recorded) == len(statuses)
    assert set(tables.table_names(store.db)) >= {"images", "files", "_clipstore_migrations"}


def test_pending_migration_is_listed_then_applied_on_connect(store, store_path):
    store.db.open_table(layout.MIGRATIONS).delete("name = '0001_create_tables'")
    listed = connect(store_path, create=False, apply_migrations=False).migrations()
    assert [(s.name, s.applied) for s in listed][:1] == [("0001_create_tables", False)]
    assert connect(store_path).migrations()[0].applied


def test_store_from_a_newer_clipstore_is_refused(store, store_path):
    table = store.db.open_table(layout.MIGRATIONS)
    table.add(pa.table({"name": ["9999_from_the_future"], "applied_at": [tables.utc_now()]}, schema=table.schema))
    with pytest.raises(clipstore.StoreVersionError, match="newer clipstore.*9999_from_the_future"):
        clipstore.connect(store_path)
