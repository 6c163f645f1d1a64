"""Add `_clipstore_heads`: the record of each trained Model A head (files under `<store>/heads/<id>/`).

Columns: id, created_at, folder (relative to the store), base_model (the CLIP identity it was trained on, JSON),
validation_avg_cos, ensemble_alpha, config (the head's config.json). Idempotent.
"""

from clipstore import tables
from clipstore.heads import HEADS_TABLE, heads_schema


def apply(context) -> None:
    if not tables.table_exists(context.db, HEADS_TABLE):
        context.db.create_table(HEADS_TABLE, schema=heads_schema())
