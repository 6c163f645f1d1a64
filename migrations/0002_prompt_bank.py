"""Add the prompt bank: the `prompts` table, the `_clipstore_settings` table, and prompt columns on images.

`prompts`: id (SHA-256 of the text), seq (insertion order), text, clip_embedding (the store's CLIP text
encoder), minilm_embedding (all-MiniLM-L6-v2, 384-d), source, added_at. `images` gains `prompt` and
`prompt_source` (the prompt an image carries, e.g. a Stable Diffusion `parameters` chunk). Idempotent.

Frozen: the names, schemas and metadata key below are literal, as this migration first wrote them.
"""

import pyarrow as pa

from clipstore.db import tables

IMAGES = "images"
PROMPTS = "prompts"
SETTINGS = "_clipstore_settings"
MODEL_METADATA_KEY = b"clipstore.model"
MINILM_DIM = 384

IMAGE_PROMPT_FIELDS = [pa.field("prompt", pa.string()), pa.field("prompt_source", pa.string())]
SETTINGS_SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())])


def prompts_schema(embed_dim: int, model_json: str) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("seq", pa.int64()),
            pa.field("text", pa.string()),
            pa.field("clip_embedding", pa.list_(pa.float32(), embed_dim)),
            pa.field("minilm_embedding", pa.list_(pa.float32(), MINILM_DIM)),
            pa.field("source", pa.string()),
            pa.field("added_at", pa.timestamp("us", tz="UTC")),
        ],
        metadata={MODEL_METADATA_KEY: model_json.encode()},
    )


def apply(context) -> None:
    db = context.db
    if not tables.table_exists(db, PROMPTS):
        db.create_table(PROMPTS, schema=prompts_schema(context.model.embed_dim, context.model.to_json()))
    if not tables.table_exists(db, SETTINGS):
        db.create_table(SETTINGS, schema=SETTINGS_SCHEMA)
    images = db.open_table(IMAGES)
    missing = [field for field in IMAGE_PROMPT_FIELDS if field.name not in images.schema.names]
    if missing:
        images.add_columns(pa.schema(missing))
