"""Record on each image row its first stored path in sorted order (`first_path`, string), for indexed search.

Adds the nullable string column `first_path` to `images` and to every `images__<key>` table (the tables of a
model switch). Null means "not known": searches then read the image's paths from `files`, as before. Ingest fills
it for the rows it writes or whose paths change; `clipstore index --rebuild` fills it for every row (rows written
before this migration) before rebuilding the index. Adding the column rewrites no row, so a table keeps its
vector index. Idempotent: a table that has the column is left as it is.
"""

import pyarrow as pa

from clipstore.db import tables

# Literal on purpose: what this migration does must not change when the live schema helpers do.
IMAGES = "images"
COLUMN = pa.field("first_path", pa.string())


def apply(context) -> None:
    db = context.db
    for name in sorted(tables.table_names(db)):
        if name != IMAGES and not name.startswith(IMAGES + "__"):
            continue
        table = db.open_table(name)
        if COLUMN.name not in table.schema.names:
            table.add_columns(pa.schema([COLUMN]))
