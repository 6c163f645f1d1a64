"""LanceDB vector indexes on a store's vector columns (images' `embedding`, the prompt bank's embeddings).

One kind of index everywhere: IVF_HNSW_SQ with cosine distance, named `<column>_idx`. While a table has one on a
column, searches of that column ask LanceDB (`indexed_search`); rows added after the index was built or brought
up to date are not in it, and LanceDB scans them exactly beside it (`fast_search` stays off), so they are found.

Scalar columns that searches filter or look up by (file paths, image ids) get BTREE indexes the same way
(`ensure_scalar_index`).

When a table gets one: explicitly (`clipstore index`), or automatically once it holds `index_threshold(db)` rows
(the store setting `layout.INDEX_THRESHOLD_SETTING`, default `DEFAULT_INDEX_THRESHOLD`): below that an exact
scan is as fast as the index and needs no build. `ensure_index` is what writers call after adding rows.

The query parameters were chosen on clustered vectors and real clipstore-mini embeddings
(benchmarks/search_scale.py --sweep; BENCHMARKS.md "Search at scale"): 8% of the partitions (at least 20), ef 100,
refine factor 5 (the candidates are re-scored with the full vectors, so scores are exact cosines).
"""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from clipstore.db import layout, tables
from clipstore.errors import InvalidOptionError
from clipstore.progress import Progress

if TYPE_CHECKING:
    import lancedb
    import numpy as np
    import pyarrow as pa

INDEX_TYPE = "IVF_HNSW_SQ"
DEFAULT_INDEX_THRESHOLD = 50_000
"""Rows from which a table is indexed automatically (see BENCHMARKS.md, "Search at scale", for the measurement)."""
ROWS_PER_SQRT_PARTITION = 4
"""num_partitions = isqrt(rows) // 4 (at least 1): each partition is its own HNSW graph, so few are needed;
60 rows get 1, 300 rows 4, 200k rows 111, 1M rows 250."""
MIN_NPROBES = 20
NPROBE_SHARE = 0.08
"""Partitions searched per query: this share of them, at least MIN_NPROBES (every partition of a small table).
Measured (benchmarks/search_scale.py --sweep, describe_scale.py): recall@10 1.000 from 10 of 111 partitions at
200k real clipstore-mini embeddings and 10-20 of 250 at 1M clustered 512-d vectors, where a quarter cost 2x the
time for nothing; but a 20k prompt bank of MiniLM vectors needs 20 of its 35 (0.950 with 10, 1.000 with 20)."""
EF = 100
"""HNSW candidate list size per query (raised to limit x refine factor, which LanceDB requires)."""
REFINE_FACTOR = 5
"""LanceDB re-scores limit x this candidates with the full vectors, so the scores returned are exact cosines."""
KEEP_VERSIONS = timedelta(days=365 * 100)
"""`optimize` also prunes old table versions (by default those older than 7 days); the model switch and its
rollback restore recorded versions, so bringing an index up to date must prune nothing."""


def index_name(column: str) -> str:
    """The name clipstore gives the vector index on `column` (`embedding_idx` for the images tables)."""
    return f"{column}_idx"


def num_partitions(rows: int) -> int:
    """IVF partitions for an index over `rows` vectors (never more than the rows, at least 1)."""
    return max(1, min(rows, math.isqrt(max(rows, 0)) // ROWS_PER_SQRT_PARTITION))


def nprobes(rows_indexed: int) -> int:
    """Partitions to search in an index built over `rows_indexed` vectors."""
    partitions = num_partitions(rows_indexed)
    return min(partitions, max(MIN_NPROBES, math.ceil(partitions * NPROBE_SHARE)))


def vector_index(table: "lancedb.table.Table", column: str) -> Any | None:
    """The vector index on `table`'s `column` (LanceDB's `IndexConfig`), or None when it has none."""
    for config in table.list_indices():
        if list(config.columns) == [column] and type_name(config.index_type).startswith("IVF"):
            return config
    return None


def index_state(table: "lancedb.table.Table", column: str) -> dict[str, Any] | None:
    """{"name", "type", "rows_indexed", "rows_not_indexed"} of the vector index on `column`, or None."""
    config = vector_index(table, column)
    if config is None:
        return None
    return {
        "name": config.name,
        "type": type_name(config.index_type),
        "rows_indexed": int(config.num_indexed_rows),
        "rows_not_indexed": int(config.num_unindexed_rows),
    }


def index_threshold(db: "lancedb.DBConnection") -> int:
    """Rows from which tables of this store are indexed automatically (the store's setting, or the default)."""
    value = tables.read_setting(db, layout.INDEX_THRESHOLD_SETTING)
    return DEFAULT_INDEX_THRESHOLD if value is None else int(json.loads(value))


def set_index_threshold(db: "lancedb.DBConnection", rows: int) -> None:
    """Store `rows` as the automatic-index threshold (0 indexes every non-empty table)."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise InvalidOptionError(f"The index threshold must be a whole number of rows >= 0, not {rows!r}.")
    tables.write_setting(db, layout.INDEX_THRESHOLD_SETTING, json.dumps(rows))


def create_index(
    table: "lancedb.table.Table", column: str, *, rebuild: bool = False, progress: Progress | None = None
) -> tuple[str, int | None]:
    """Build the vector index on `column`, or bring an existing one up to date; returns (action, partitions).

    Without `rebuild`, an existing index gets the rows added since it was built (LanceDB's `optimize`, which also
    compacts the table's files; no version is pruned): action "updated", partitions None. With `rebuild=True` (or
    when there is none) a new index is trained over every row and replaces the old one: "rebuilt" or "built".
    The table must hold rows. Lance commits an index atomically: a process killed meanwhile leaves the table
    searchable as it was (without the index, or with the old one), and the next call finishes the job.
    """
    existing = vector_index(table, column)
    stage = "build index"
    if progress:
        progress(stage, 0, 1)
    partitions: int | None = None
    if existing is not None and not rebuild:
        action = "updated"
        table.optimize(cleanup_older_than=KEEP_VERSIONS)
    else:
        from lancedb.index import HnswSq

        action = "built" if existing is None else "rebuilt"
        name = index_name(column)
        if existing is not None and existing.name != name:
            table.drop_index(existing.name)  # an index made outside clipstore: ours replaces it
        partitions = num_partitions(table.count_rows())
        table.create_index(column, config=HnswSq(distance_type="cosine", num_partitions=partitions), name=name, replace=True)
    if progress:
        progress(stage, 1, 1)
    return action, partitions


def ensure_index(
    table: "lancedb.table.Table", column: str, threshold: int, progress: Progress | None = None
) -> str | None:
    """What writers call after adding rows: bring an existing index up to date when rows are missing from it,
    or build one when the table has reached `threshold` rows and has none. Returns the action taken, or None."""
    existing = vector_index(table, column)
    if existing is not None:
        if int(existing.num_unindexed_rows) == 0:
            return None
        return create_index(table, column, progress=progress)[0]
    if table.count_rows() >= max(threshold, 1):
        return create_index(table, column, progress=progress)[0]
    return None


def ensure_scalar_index(table: "lancedb.table.Table", column: str, threshold: int) -> str | None:
    """A BTREE index on a scalar `column` (paths, ids) once the table has reached `threshold` rows, so filters
    and lookups by that column read the index instead of scanning; brought up to date when rows are missing
    from it. Returns "built", "updated" or None."""
    existing = next((c for c in table.list_indices() if list(c.columns) == [column]), None)
    if existing is not None:
        if int(existing.num_unindexed_rows) == 0:
            return None
        table.optimize(cleanup_older_than=KEEP_VERSIONS)
        return "updated"
    if table.count_rows() < max(threshold, 1):
        return None
    from lancedb.index import BTree

    table.create_index(column, config=BTree(), name=index_name(column), replace=True)
    return "built"


def indexed_search(
    table: "lancedb.table.Table",
    column: str,
    index: Any,
    query: "np.ndarray",
    limit: int,
    select: list[str],
    where: str | None = None,
) -> "pa.Table":
    """The `limit` rows of `table` nearest to `query` (shape (d,)) by cosine through the vector `index` on
    `column`: the `select`ed columns and `_distance` (cosine distance, 1 - cosine similarity), nearest first.
    `where` (SQL) filters before the search (LanceDB prefilter), so a filter never shortens the list."""
    search = (
        table.search(query, vector_column_name=column)
        .distance_type("cosine")
        .nprobes(nprobes(int(index.num_indexed_rows)))
        .ef(max(EF, limit * REFINE_FACTOR))
        .refine_factor(REFINE_FACTOR)
    )
    if where is not None:
        search = search.where(where, prefilter=True)
    # `_distance` named: LanceDB warns on stderr when the distance is projected implicitly.
    return search.select([*select, "_distance"]).limit(limit).to_arrow()


def type_name(index_type: str) -> str:
    """LanceDB's `IvfHnswSq` as the `IVF_HNSW_SQ` its `create_index` takes."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", str(index_type)).upper()
