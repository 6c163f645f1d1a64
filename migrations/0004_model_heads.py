"""Add `_clipstore_heads`: the record of each trained Model A head (files under `<store>/heads/<id>/`).

Columns: id, created_at, folder (relative to the store), base_model (the CLIP identity it was trained on, JSON),
validation_avg_cos, ensemble_alpha, config (the head's config.json). Idempotent.

Frozen: the name and schema below are literal, as this migration first wrote them.
"""

import pyarrow as pa

from clipstore.db import tables

HEADS = "_clipstore_heads"
HEADS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("folder", pa.string()),
        pa.field("base_model", pa.string()),
        pa.field("validation_avg_cos", pa.float64()),
        pa.field("ensemble_alpha", pa.float64()),
        pa.field("config", pa.string()),
    ]
)


def apply(context) -> None:
    if not tables.table_exists(context.db, HEADS):
        context.db.create_table(HEADS, schema=HEADS_SCHEMA)
