"""The migration runner: numbered, forward-only, recorded schema changes.

Migrations live in the `clipstore.migrations` package (the repository's `migrations/` folder) as
`NNNN_description.py` modules, each with a docstring and an `apply(context)` function that is idempotent.
Applied migrations are recorded in the `_clipstore_migrations` table (name, applied_at). A store that has a
migration this version of clipstore does not know was written by a newer clipstore and is refused.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Callable

from clipstore.db import tables
from clipstore.errors import StoreVersionError
from clipstore.encoders.identity import ModelIdentity
from clipstore.results import MigrationStatus
from clipstore.db import layout

if TYPE_CHECKING:
    import lancedb

MIGRATIONS_PACKAGE = "clipstore.migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+$")


@dataclass(frozen=True)
class MigrationContext:
    """What a migration may use: the LanceDB connection, the store path, and the store's model identity."""

    db: "lancedb.DBConnection"
    store_path: str
    model: ModelIdentity


@dataclass(frozen=True)
class Migration:
    name: str
    description: str
    apply: Callable[[MigrationContext], None]


@lru_cache(maxsize=1)
def available_migrations() -> tuple[Migration, ...]:
    """Every migration this clipstore ships, in order."""
    names = sorted(
        entry.name[: -len(".py")]
        for entry in resources.files(MIGRATIONS_PACKAGE).iterdir()
        if entry.name.endswith(".py") and _NAME.match(entry.name[: -len(".py")])
    )
    found = []
    for name in names:
        module = importlib.import_module(f"{MIGRATIONS_PACKAGE}.{name}")
        description = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        found.append(Migration(name, description, module.apply))
    return tuple(found)


def applied_migrations(db: "lancedb.DBConnection") -> dict[str, str]:
    """Applied migration name -> applied_at (ISO 8601, UTC). Empty for a new store."""
    if not tables.table_exists(db, layout.MIGRATIONS):
        return {}
    rows = tables.read_columns(db.open_table(layout.MIGRATIONS), ["name", "applied_at"]).to_pylist()
    return {row["name"]: row["applied_at"].isoformat() for row in rows}


def check_not_newer(db: "lancedb.DBConnection", store_path: str) -> None:
    """Raise StoreVersionError when the store has migrations unknown to this clipstore."""
    known = {migration.name for migration in available_migrations()}
    unknown = sorted(set(applied_migrations(db)) - known)
    if unknown:
        raise StoreVersionError(
            f"The store at {store_path} was written by a newer clipstore (it has migration(s) "
            f"{', '.join(unknown)} that this version does not know). Upgrade clipstore "
            "(pip install -U clipstore) to open it."
        )


def migration_status(db: "lancedb.DBConnection") -> tuple[MigrationStatus, ...]:
    """Each known migration with whether and when it was applied."""
    applied = applied_migrations(db)
    return tuple(
        MigrationStatus(m.name, m.name in applied, applied.get(m.name), m.description) for m in available_migrations()
    )


def apply_pending(context: MigrationContext) -> list[str]:
    """Apply every pending migration in order, recording each right after it succeeds. Returns their names.

    The caller holds the store's write lock, so two processes never migrate at once.
    """
    check_not_newer(context.db, context.store_path)
    applied = applied_migrations(context.db)
    done = []
    for migration in available_migrations():
        if migration.name in applied:
            continue
        migration.apply(context)
        _record(context.db, migration.name)
        done.append(migration.name)
    return done


def _record(db: "lancedb.DBConnection", name: str) -> None:
    import pyarrow as pa

    schema = layout.migrations_schema()
    table = db.create_table(layout.MIGRATIONS, schema=schema, exist_ok=True)
    row = pa.table({"name": [name], "applied_at": [tables.utc_now()]}, schema=schema)
    table.merge_insert("name").when_not_matched_insert_all().execute(row)
