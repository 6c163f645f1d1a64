"""Table names, Arrow schemas and small LanceDB helpers shared by the store, ingest and migrations.

The tables are plain LanceDB tables; an application can open them directly with
`lancedb.connect(store_path).open_table("images")`. The model identity that made the `embedding` column
lives in the `images` table's schema metadata under `clipstore.model` (JSON).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

from .models import ModelIdentity

if TYPE_CHECKING:
    import lancedb
    import pyarrow as pa

IMAGES = "images"
FILES = "files"
MIGRATIONS = "_clipstore_migrations"
MODEL_METADATA_KEY = b"clipstore.model"


def images_schema(model: ModelIdentity) -> "pa.Schema":
    """One row per distinct image content; `id` is the SHA-256 (hex) of the file bytes."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("format", pa.string()),
            pa.field("embedding", pa.list_(pa.float32(), model.embed_dim)),
            pa.field("added_at", pa.timestamp("us", tz="UTC")),
        ],
        metadata={MODEL_METADATA_KEY: model.to_json().encode()},
    )


def files_schema() -> "pa.Schema":
    """One row per path; several paths with identical bytes share one `image_id`."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("size", pa.int64()),
            pa.field("mtime_ns", pa.int64()),
            pa.field("image_id", pa.string()),
            pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
        ]
    )


def migrations_schema() -> "pa.Schema":
    import pyarrow as pa

    return pa.schema(
        [pa.field("name", pa.string(), nullable=False), pa.field("applied_at", pa.timestamp("us", tz="UTC"))]
    )


def table_names(db: "lancedb.DBConnection") -> set[str]:
    """Names of every table in the database (all pages of `list_tables`)."""
    names: set[str] = set()
    page_token = None
    while True:
        response = db.list_tables(page_token=page_token)
        names.update(response.tables)
        page_token = response.page_token
        if not page_token or not response.tables:
            return names


def table_exists(db: "lancedb.DBConnection", name: str) -> bool:
    return name in table_names(db)


def stored_model(table: "lancedb.table.Table") -> ModelIdentity | None:
    """The model identity recorded in a table's schema metadata, or None."""
    metadata = table.schema.metadata or {}
    raw = metadata.get(MODEL_METADATA_KEY)
    return ModelIdentity.from_json(raw.decode()) if raw else None


def read_columns(table: "lancedb.table.Table", columns: list[str]) -> "pa.Table":
    """All rows of `table`, only the named columns."""
    return table.search().select(columns).limit(None).to_arrow()


def sql_in(column: str, values: Iterable[str]) -> str:
    """A `column IN ('a', 'b')` filter with SQL string quoting (single quotes doubled)."""
    quoted = ", ".join("'" + value.replace("'", "''") + "'" for value in values)
    return f"{column} IN ({quoted})"


def delete_where_in(table: "lancedb.table.Table", column: str, values: Iterable[str], chunk: int = 500) -> None:
    """Delete rows whose `column` is one of `values`, in chunks that keep each filter short."""
    values = list(values)
    for start in range(0, len(values), chunk):
        table.delete(sql_in(column, values[start : start + chunk]))


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
