"""Create the images and files tables, recording the store's model identity with the images table.

`images`: one row per distinct image content (id = SHA-256 of the bytes, width, height, format, embedding,
added_at). `files`: one row per path (path, size, mtime_ns, image_id, ingested_at). Idempotent: existing
tables are left as they are.

Frozen: the names, schemas and metadata key below are literal, as this migration first wrote them; a later
schema change is a new migration (tests/db/test_migrations.py keeps the live schemas in `clipstore.db.layout` equal
to what the migrations build).
"""

import pyarrow as pa

from clipstore.db import tables

IMAGES = "images"
FILES = "files"
MODEL_METADATA_KEY = b"clipstore.model"


def images_schema(embed_dim: int, model_json: str) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("format", pa.string()),
            pa.field("embedding", pa.list_(pa.float32(), embed_dim)),
            pa.field("added_at", pa.timestamp("us", tz="UTC")),
        ],
        metadata={MODEL_METADATA_KEY: model_json.encode()},
    )


FILES_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("size", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
        pa.field("image_id", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)


def apply(context) -> None:
    db = context.db
    if not tables.table_exists(db, IMAGES):
        db.create_table(IMAGES, schema=images_schema(context.model.embed_dim, context.model.to_json()))
    if not tables.table_exists(db, FILES):
        db.create_table(FILES, schema=FILES_SCHEMA)
