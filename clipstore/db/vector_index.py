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
(benchmarks/search_scale.py --sweep; BENCHMARKS.md "Search at scale"): for images 4% of the partitions (at least
10), for the prompt bank 8% (at least 20), ef 100, and twice the asked rows re-scored with their full vectors (so
scores are exact cosines).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from clipstore.db import layout, tables
from clipstore.errors import InvalidOptionError
from clipstore.progress import Progress

if TYPE_CHECKING:
    import lance
    import lancedb
    import numpy as np
    import pyarrow as pa

INDEX_TYPE = "IVF_HNSW_SQ"
DEFAULT_INDEX_THRESHOLD = 50_000
"""Rows from which a table is indexed automatically (see BENCHMARKS.md, "Search at scale", for the measurement)."""
ROWS_PER_SQRT_PARTITION = 4
"""num_partitions = isqrt(rows) // 4 (at least 1): each partition is its own HNSW graph, so few are needed;
60 rows get 1, 300 rows 4, 200k rows 111, 1M rows 250."""


@dataclass(frozen=True)
class QueryPolicy:
    """How many of an index's partitions a query searches: `share` of them, at least `min_nprobes` (every
    partition of a small index); `ef`: the HNSW candidate list size (raised to the number of candidates)."""

    min_nprobes: int
    share: float
    ef: int = 100


IMAGES_QUERY = QueryPolicy(min_nprobes=10, share=0.04)
"""Image vectors. Measured (benchmarks/search_scale.py --sweep): recall@10 0.999 with 10 of 111 partitions at 200k
real clipstore-mini embeddings (0.989 with 5) and 1.000 with 5-10 of 250 at 1M clustered 512-d vectors; 20 cost
2-3 ms more per query for nothing."""
IMAGES_PREFIX_QUERY = QueryPolicy(min_nprobes=20, share=0.08)
"""Image vectors searched for the images under a path prefix (the index over-fetched by the share of the store
they make up): their nearest neighbours are fewer per partition, so more partitions are probed. Measured at 200k
real embeddings, prefix = 1/8 of the store: recall@10 0.979 with IMAGES_QUERY (10 of 111), 1.000 with 20."""
BANK_QUERY = QueryPolicy(min_nprobes=20, share=0.08)
"""Prompt-bank vectors: a 20k bank of MiniLM vectors needs 20 of its 35 partitions (recall@10 0.950 with 10,
1.000 with 20; describe_scale.py)."""
RESCORE_FACTOR = 2
"""A query asks the index for limit x this candidates with their full vectors and re-scores them exactly
(numpy), so the scores returned are exact cosines and the order is exact among the candidates. Cheaper than
LanceDB's own refine step (which re-reads limit x refine factor vectors): ~6 ms instead of ~11 ms at 1M."""
KEEP_VERSIONS = timedelta(days=365 * 100)
"""`optimize` also prunes old table versions (by default those older than 7 days); the model switch and its
rollback restore recorded versions, so bringing an index up to date must prune nothing."""


def index_name(column: str) -> str:
    """The name clipstore gives the vector index on `column` (`embedding_idx` for the images tables)."""
    return f"{column}_idx"


def num_partitions(rows: int) -> int:
    """IVF partitions for an index over `rows` vectors (never more than the rows, at least 1)."""
    return max(1, min(rows, math.isqrt(max(rows, 0)) // ROWS_PER_SQRT_PARTITION))


def nprobes(rows_indexed: int, policy: QueryPolicy = BANK_QUERY) -> int:
    """Partitions to search in an index built over `rows_indexed` vectors."""
    partitions = num_partitions(rows_indexed)
    return min(partitions, max(policy.min_nprobes, math.ceil(partitions * policy.share)))


def vector_index(table: "lancedb.table.Table", column: str) -> Any | None:
    """The vector index on `table`'s `column` (LanceDB's `IndexConfig`), or None when it has none."""
    for config in table.list_indices():
        if list(config.columns) == [column] and type_name(config.index_type).startswith("IVF"):
            return config
    return None


_INDEXES: dict[tuple[str, int, str], Any] = {}
INDEXES_KEPT = 64


def vector_index_cached(table: "lancedb.table.Table", column: str, dataset: "lance.LanceDataset | None" = None) -> Any | None:
    """`vector_index(table, column)` for readers: looked up once per (table, version, column), since listing a
    table's indexes costs a few ms per query. `dataset`: `tables.lance_dataset(table)` when the caller has it."""
    dataset = dataset if dataset is not None else tables.lance_dataset(table)
    key = (dataset.uri, dataset.version, column)
    if key not in _INDEXES:
        if len(_INDEXES) >= INDEXES_KEPT:
            _INDEXES.pop(next(iter(_INDEXES)))
        _INDEXES[key] = vector_index(table, column)
    return _INDEXES[key]


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
    policy: QueryPolicy = BANK_QUERY,
    dataset: "lance.LanceDataset | None" = None,
) -> "pa.Table":
    """The `limit` rows of `table` nearest to `query` (shape (d,)) by cosine through the vector `index` on
    `column`: the `select`ed columns and `_distance` (cosine distance, 1 - cosine similarity, exact), nearest
    first. `where` (SQL) filters before the search (prefilter), so a filter never shortens the list. Rows added
    since the index was last brought up to date are scanned beside it, so they are found too.

    The query runs on the table's Lance dataset (`tables.lance_dataset`), which costs less per query than
    lancedb's wrapper (`dataset`, when the caller has it); the index's candidates are re-scored with their
    full vectors (`RESCORE_FACTOR`)."""
    import numpy as np
    import pyarrow as pa

    query = np.asarray(query, dtype=np.float32).reshape(-1)
    candidates = max(limit, 1) * RESCORE_FACTOR
    nearest = {
        "column": column,
        "q": query,
        "k": candidates,
        "nprobes": nprobes(int(index.num_indexed_rows), policy),
        "ef": max(policy.ef, candidates),
        "metric": "cosine",
    }
    columns = list(dict.fromkeys([*select, column, "_distance"]))  # `_distance` named: Lance warns on stderr otherwise
    dataset = dataset if dataset is not None else tables.lance_dataset(table)
    found = dataset.to_table(columns=columns, nearest=nearest, filter=where, prefilter=where is not None)
    if found.num_rows == 0:
        return pa.table({**{name: found.column(name) for name in select}, "_distance": pa.array([], pa.float32())})
    vectors = tables.vector_matrix(found.column(column))
    norms = np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
    similarity = vectors @ query / (norms * max(float(np.linalg.norm(query)), 1e-12))
    order = np.argsort(-similarity, kind="stable")[:limit]
    best = found.take(pa.array(order))
    distances = pa.array((1.0 - similarity[order]).astype(np.float32))
    return pa.table({**{name: best.column(name) for name in select}, "_distance": distances})


def type_name(index_type: str) -> str:
    """LanceDB's `IvfHnswSq` as the `IVF_HNSW_SQ` its `create_index` takes."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", str(index_type)).upper()
