"""Add the prompt bank: the `prompts` table, the `_clipstore_settings` table, and prompt columns on images.

`prompts`: id (SHA-256 of the text), seq (insertion order), text, clip_embedding (the store's CLIP text
encoder), minilm_embedding (all-MiniLM-L6-v2, 384-d), source, added_at. `images` gains `prompt` and
`prompt_source` (the prompt an image carries, e.g. a Stable Diffusion `parameters` chunk). Idempotent.
"""

import pyarrow as pa

from clipstore import tables


def apply(context) -> None:
    db = context.db
    if not tables.table_exists(db, tables.PROMPTS):
        db.create_table(tables.PROMPTS, schema=tables.prompts_schema(context.model))
    if not tables.table_exists(db, tables.SETTINGS):
        db.create_table(tables.SETTINGS, schema=tables.settings_schema())
    images = db.open_table(tables.IMAGES)
    missing = [field for field in tables.image_prompt_fields() if field.name not in images.schema.names]
    if missing:
        images.add_columns(pa.schema(missing))
