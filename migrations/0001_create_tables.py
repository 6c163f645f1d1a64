"""Create the images and files tables, recording the store's model identity with the images table.

`images`: one row per distinct image content (id = SHA-256 of the bytes, width, height, format, embedding,
added_at). `files`: one row per path (path, size, mtime_ns, image_id, ingested_at). Idempotent: existing
tables are left as they are.
"""

import pyarrow as pa

from clipstore import tables


def apply(context) -> None:
    db = context.db
    if not tables.table_exists(db, tables.IMAGES):
        metadata = {tables.MODEL_METADATA_KEY: context.model.to_json().encode()}
        db.create_table(tables.IMAGES, schema=pa.schema(tables.images_base_fields(context.model), metadata=metadata))
    if not tables.table_exists(db, tables.FILES):
        db.create_table(tables.FILES, schema=tables.files_schema())
