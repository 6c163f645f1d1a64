"""Record on each image row whether its prompt was offered to the prompt bank (`prompt_offered`, boolean).

Adds the nullable boolean column `prompt_offered` to `images` and to every `images__<key>` table (the tables
of a model switch: current, previous and re-embed staging ones, so a rollback or a resumed re-embed finds it
too). Null means "not offered yet": ingest offers the prompt of every row whose flag is not true to the bank
and then sets it, so the prompts of rows written before this migration are offered once (the bank's gate
refuses the ones it already holds). Idempotent: a table that has the column is left as it is.
"""

import pyarrow as pa

from clipstore.db import tables

# Literal on purpose: what this migration does must not change when the live schema helpers do.
IMAGES = "images"
COLUMN = pa.field("prompt_offered", pa.bool_())


def apply(context) -> None:
    db = context.db
    for name in sorted(tables.table_names(db)):
        if name != IMAGES and not name.startswith(IMAGES + "__"):
            continue
        table = db.open_table(name)
        if COLUMN.name not in table.schema.names:
            table.add_columns(pa.schema([COLUMN]))
