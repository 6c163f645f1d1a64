"""The dedup migration: keep the prompt bank free of near-duplicates (cosine >= 0.85 on MiniLM embeddings).

Applying it de-duplicates the existing prompt rows (in insertion order, the earliest wins) and records the
threshold in `_clipstore_settings` (key `prompt_dedup_threshold`); from then on every insert path enforces
it, duplicates within one batch included. Idempotent: a bank that is already free of near-duplicates is
left as it is.

Frozen: the table names, settings key, threshold and the de-duplication itself are written out here, as
this migration first did them, instead of calling the prompt bank's live code (`clipstore.prompts`,
`clipstore.prompts.dedup`), which may change. It uses `clipstore.db.tables` only for generic LanceDB access (listing
tables, deleting rows by id), never for a schema, a name or a setting.
"""

import numpy as np
import pyarrow as pa

from clipstore.db import tables

PROMPTS = "prompts"
SETTINGS = "_clipstore_settings"
SETTINGS_SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())])
DEDUP_SETTING = "prompt_dedup_threshold"
THRESHOLD = 0.85
MINILM_DIM = 384

_BLOCK = 2048  # rows decided together; products against earlier kept rows are taken _KEPT_CHUNK at a time
_KEPT_CHUNK = 8192
_BOUNDARY = 1e-5  # float32 similarities this close to the threshold are recomputed in float64


def apply(context) -> None:
    db = context.db
    if tables.table_exists(db, PROMPTS):
        table = db.open_table(PROMPTS)
        data = tables.read_columns(table, ["id", "seq", "minilm_embedding"])
        data = data.take(np.argsort(data.column("seq").to_numpy(), kind="stable"))
        flat = data.column("minilm_embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = np.asarray(flat, dtype=np.float32).reshape(len(data), MINILM_DIM)
        ids = data.column("id").to_pylist()
        rejected = [ids[i] for i in np.flatnonzero(~kept_in_insertion_order(vectors, THRESHOLD))]
        if rejected:
            tables.delete_where_in(table, "id", rejected)
    settings = db.create_table(SETTINGS, schema=SETTINGS_SCHEMA, exist_ok=True)
    row = pa.table({"key": [DEDUP_SETTING], "value": [str(THRESHOLD)]}, schema=SETTINGS_SCHEMA)
    settings.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(row)


def kept_in_insertion_order(vectors: np.ndarray, threshold: float, block: int = _BLOCK) -> np.ndarray:
    """Which rows of `vectors` (n, d), L2-normalised and in insertion order, the bank keeps: a row is dropped
    iff its cosine (dot product) with an earlier KEPT row is >= `threshold`. Returns a bool mask (n,).

    Exact: every row is compared with every earlier kept row, `block` rows at a time (blocked float32 matrix
    products, with near-threshold scores settled in float64; a bank of 100k distinct prompts takes about a
    minute on one CPU core, once); within a block the rows are decided one after the other.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    keep = np.zeros(n, dtype=bool)
    kept = np.empty_like(vectors)  # the kept rows so far, packed at the front
    count = 0
    for start in range(0, n, block):
        rows = vectors[start : start + block]
        dropped = np.zeros(len(rows), dtype=bool)
        for first in range(0, count, _KEPT_CHUNK):
            earlier = kept[first : min(first + _KEPT_CHUNK, count)]
            dropped |= _reaches(rows, earlier, threshold).any(axis=1)
        near = _reaches(rows, rows, threshold)
        for i in range(len(rows)):
            if not dropped[i]:
                dropped[i + 1 :] |= near[i, i + 1 :]
        decided = np.flatnonzero(~dropped)
        keep[start + decided] = True
        kept[count : count + len(decided)] = rows[decided]
        count += len(decided)
    return keep


def _reaches(a: np.ndarray, b: np.ndarray, threshold: float) -> np.ndarray:
    """(len(a), len(b)) bool: cosine >= threshold, settled in float64 where float32 is too close to call."""
    scores = a @ b.T
    near = scores >= threshold - _BOUNDARY
    i, j = np.nonzero(near & (scores < threshold + _BOUNDARY))
    if len(i):
        near[i, j] = np.einsum("ij,ij->i", a[i].astype(np.float64), b[j].astype(np.float64)) >= threshold
    return near
