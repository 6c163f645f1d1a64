"""The store's layout in one place: every table name, Arrow schema, settings key and folder name.

A store is a folder:

    <store>/
      images.lance, files.lance, prompts.lance     the current tables (after a model switch the vectors live in
                                                   images__<key> / prompts__<key>, named by `active_tables`)
      _clipstore_settings.lance                    settings (key, value JSON text); keys below
      _clipstore_migrations.lance                  applied migrations (name, applied_at)
      _clipstore_heads.lance, heads/<id>/          trained Model A heads (config.json, model_a.safetensors)
      models/<id>/                                 fine-tuned CLIP models (config.json, model.safetensors)
      .clipstore-write.lock                        the one-writer lock (a local folder)
      _clipstore_write_lease.lance                 the one-writer lease (object storage; see `clipstore.db.locking`)

A store on object storage (`s3://bucket/photos.clipstore`) has the same tables and files under its URI.
The schemas here are the live ones (what new tables get at run time); the migrations in `clipstore.migrations`
carry their own frozen copies, and tests/db/test_migrations.py keeps the two equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipstore.encoders.identity import ModelIdentity
from clipstore.encoders.minilm import MINILM_DIM

if TYPE_CHECKING:
    import pyarrow as pa

IMAGES = "images"
FILES = "files"
PROMPTS = "prompts"
SETTINGS = "_clipstore_settings"
MIGRATIONS = "_clipstore_migrations"
MODEL_METADATA_KEY = b"clipstore.model"
PROMPT_OFFERED = "prompt_offered"
FIRST_PATH = "first_path"
HEADS_TABLE = "_clipstore_heads"
LEASE_TABLE = "_clipstore_write_lease"
"""The write lease of a store on object storage: one row naming the writer and until when it holds the store."""
IMAGES_VECTOR_INDEX = "embedding_idx"
"""The name of the optional LanceDB vector index on the images tables' `embedding` column (`clipstore index`)."""

# Settings keys (`_clipstore_settings`)
ACTIVE_SETTING = "active_tables"
"""{"images": name, "prompts": name}: the tables holding the current vectors (one write switches models)."""
DEDUP_SETTING = "prompt_dedup_threshold"
"""The prompt bank's near-duplicate threshold (migration 0003)."""
HISTORY_SETTING = "model_history"
"""The stack of model switches a rollback can undo."""
ROLLBACKS_SETTING = "model_rollbacks"
"""The switches already rolled back (so a second rollback can say so)."""
LOCATIONS_SETTING = "model_locations"
"""SHA-256 -> path of checkpoints relinked after they moved."""
UNCOMMITTED_FRAGMENTS_SETTING = "uncommitted_fragments"
"""Set by a distributed ingest while its workers write fragments of a table that it has not committed yet (the
table's name, JSON): when a run is killed meanwhile, the next ingest or `clipstore gc` removes them."""
INDEX_THRESHOLD_SETTING = "index_threshold"
"""Rows from which a table gets its LanceDB indexes automatically (`clipstore index --threshold`)."""

# Folders and files inside the store folder
HEADS_FOLDER = "heads"
MODELS_FOLDER = "models"
CONFIG_FILE = "config.json"
HEAD_WEIGHTS_FILE = "model_a.safetensors"
MODEL_WEIGHTS_FILE = "model.safetensors"
LOCK_FILE = ".clipstore-write.lock"


def images_base_fields(model: ModelIdentity) -> list["pa.Field"]:
    """The columns of `images` as migration 0001 created them."""
    import pyarrow as pa

    return [
        pa.field("id", pa.string(), nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),
        pa.field("embedding", pa.list_(pa.float32(), model.embed_dim)),
        pa.field("added_at", pa.timestamp("us", tz="UTC")),
    ]


def image_prompt_fields() -> list["pa.Field"]:
    """The prompt an image was generated from (when it says so) and where it was read (migration 0002)."""
    import pyarrow as pa

    return [pa.field("prompt", pa.string()), pa.field("prompt_source", pa.string())]


def model_metadata(model: ModelIdentity, store_root: str | None = None) -> dict[bytes, bytes]:
    """The schema metadata recording which model made a table's vectors (a checkpoint inside the store at
    `store_root` is recorded relative to it, see `ModelIdentity.portable`)."""
    recorded = model.portable(store_root) if store_root else model
    return {MODEL_METADATA_KEY: recorded.to_json().encode()}


def images_schema(model: ModelIdentity, store_root: str | None = None) -> "pa.Schema":
    """The current `images` schema: one row per distinct image content; `id` is the SHA-256 of the bytes.

    `prompt_offered` (migration 0005) is true once the row's prompt has been offered to the prompt bank; null
    (or false) until then, so an ingest that stopped before the bank update is caught up by the next one.
    `first_path` (migration 0006): the image's first stored path in sorted order (the path a search reports),
    kept by the writers so an indexed search needs no second query; null when not known (rows written before
    0006), and then read from `files` (see `clipstore.db.first_paths`).
    """
    import pyarrow as pa

    return pa.schema(
        images_base_fields(model)
        + image_prompt_fields()
        + [pa.field(PROMPT_OFFERED, pa.bool_()), pa.field(FIRST_PATH, pa.string())],
        metadata=model_metadata(model, store_root),
    )


def vectors_schema_like(schema: "pa.Schema", column: str, model: ModelIdentity, store_root: str) -> "pa.Schema":
    """`schema` (every column of an existing table) with `column` holding `model`'s vectors and the model
    recorded in the metadata: the schema of a table re-embedded with another model."""
    import pyarrow as pa

    fields = [pa.field(column, pa.list_(pa.float32(), model.embed_dim)) if f.name == column else f for f in schema]
    return pa.schema(fields, metadata=model_metadata(model, store_root))


def prompts_schema(model: ModelIdentity, store_root: str | None = None) -> "pa.Schema":
    """The prompt bank: one row per kept prompt, in insertion order (`seq`), with both embeddings."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("seq", pa.int64()),
            pa.field("text", pa.string()),
            pa.field("clip_embedding", pa.list_(pa.float32(), model.embed_dim)),
            pa.field("minilm_embedding", pa.list_(pa.float32(), MINILM_DIM)),
            pa.field("source", pa.string()),
            pa.field("added_at", pa.timestamp("us", tz="UTC")),
        ],
        metadata=model_metadata(model, store_root),
    )


def settings_schema() -> "pa.Schema":
    import pyarrow as pa

    return pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())])


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


def lease_schema() -> "pa.Schema":
    """`_clipstore_write_lease`: its one row (`key` "write") names the `holder` ("" when free) and when the lease
    ends (`expires_ms`, Unix time in milliseconds)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("holder", pa.string(), nullable=False),
            pa.field("expires_ms", pa.int64(), nullable=False),
        ]
    )


def heads_schema():
    import pyarrow as pa

    return pa.schema(
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
