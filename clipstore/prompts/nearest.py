"""Nearest bank prompts through LanceDB, and the bank's vector indexes (`clipstore.db.vector_index`).

Both of the bank's vector columns are searched one query at a time: `clip_embedding` by Model B (the prompts
nearest an image) and `minilm_embedding` by `prompts search` and describe's readable prompts. Below the store's
index threshold a search is LanceDB's exact scan; from the threshold on, each column has an IVF_HNSW_SQ cosine
index (8% of its partitions probed, at least 20), and its candidates are re-scored with their full vectors, so
the scores are exact cosines either way.
Every bank writer calls `update_bank_index` after adding rows, so the bank stays indexed and current (rows
added since are scanned beside the index until then, so they are found anyway; deleted rows never come back).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipstore.db import vector_index
from clipstore.progress import Progress

if TYPE_CHECKING:
    import lancedb
    import numpy as np
    import pyarrow as pa

CLIP_COLUMN = "clip_embedding"
MINILM_COLUMN = "minilm_embedding"
BANK_VECTOR_COLUMNS = (CLIP_COLUMN, MINILM_COLUMN)


def update_bank_index(
    db: "lancedb.DBConnection", table: "lancedb.table.Table", progress: Progress | None = None
) -> dict[str, str | None]:
    """After rows were added to a prompt bank table (the current one, or a re-embed's new one): bring the index
    of each vector column up to date, or build it once the table has reached the store's index threshold.
    Returns {column: the action taken ("built", "updated") or None}."""
    threshold = vector_index.index_threshold(db)
    return {column: vector_index.ensure_index(table, column, threshold, progress) for column in BANK_VECTOR_COLUMNS}


def nearest_rows(
    table: "lancedb.table.Table", column: str, query: "np.ndarray", k: int, select: list[str]
) -> "pa.Table":
    """The k rows of `table` whose `column` vectors are nearest `query` (shape (d,)) by cosine, nearest first:
    the `select`ed columns and `_distance` (1 - cosine similarity, exact). Through the column's vector index
    when it has one, else an exact scan."""
    import numpy as np

    query = np.asarray(query, dtype=np.float32).reshape(-1)
    index = vector_index.vector_index_cached(table, column)
    if index is not None:
        return vector_index.indexed_search(table, column, index, query, k, select)
    search = table.search(query, vector_column_name=column).distance_type("cosine")
    return search.select([*select, "_distance"]).limit(k).to_arrow()
