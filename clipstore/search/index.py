"""The optional LanceDB vector index on the current images table's `embedding` column.

Built on request (`Store.build_index`, `clipstore index`): an IVF_HNSW_SQ index with cosine distance, named
`layout.IMAGES_VECTOR_INDEX`. While the current images table has a vector index on `embedding`, searches without
a path prefix ask LanceDB (`indexed_search`); rows added after the index was built or brought up to date are not
in it, and LanceDB scans them exactly alongside the index (`fast_search` stays off), so they are still found.

The parameters below follow FACTS.md (IVF_HNSW_SQ, ef 150, refine 5: recall@10 1.000 at 200k clustered vectors)
and scale with the row count; they are not yet tuned by a benchmark at 1M rows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from clipstore.db import layout, tables
from clipstore.errors import IndexBuildError
from clipstore.progress import Progress
from clipstore.results import _AsDict

if TYPE_CHECKING:
    import lancedb
    import numpy as np
    import pyarrow as pa

    from clipstore.db.context import StoreContext

VECTOR_COLUMN = "embedding"
INDEX_TYPE = "IVF_HNSW_SQ"
ROWS_PER_SQRT_PARTITION = 4
"""num_partitions = isqrt(rows) // 4 (at least 1): each partition is its own HNSW graph, so few are needed;
60 rows get 1, 300 rows 4, 200k rows 111, 1M rows 250."""
MIN_NPROBES = 20
"""Partitions searched per query: at least this many (every partition of a small table), else a quarter."""
EF = 150
"""HNSW candidate list size per query (raised to limit x refine factor, which LanceDB requires)."""
REFINE_FACTOR = 5
"""LanceDB re-scores limit x this candidates with the full vectors, so the scores returned are exact cosines."""
KEEP_VERSIONS = timedelta(days=365 * 100)
"""`optimize` also prunes old table versions (by default those older than 7 days); the model switch and its
rollback restore recorded versions, so bringing an index up to date must prune nothing."""


@dataclass(frozen=True)
class IndexReport(_AsDict):
    """What one `Store.build_index` did.

    table: the images table indexed (the current one). action: "built" (no index before), "rebuilt"
    (`rebuild=True` replaced one) or "updated" (rows added since the last build were added to the index).
    index_type: e.g. "IVF_HNSW_SQ". num_partitions: the IVF partitions of a new index (None when updated).
    rows_indexed / rows_not_indexed: rows the index covers / rows searched by a scan beside it, after the call.
    """

    table: str
    action: str
    index_type: str
    num_partitions: int | None
    rows_indexed: int
    rows_not_indexed: int


def num_partitions(rows: int) -> int:
    """IVF partitions for an index over `rows` vectors (never more than the rows, at least 1)."""
    return max(1, min(rows, math.isqrt(max(rows, 0)) // ROWS_PER_SQRT_PARTITION))


def nprobes(rows_indexed: int) -> int:
    """Partitions to search in an index built over `rows_indexed` vectors."""
    partitions = num_partitions(rows_indexed)
    return min(partitions, max(MIN_NPROBES, math.ceil(partitions / 4)))


def vector_index(table: "lancedb.table.Table") -> Any | None:
    """The vector index on `table`'s `embedding` column (LanceDB's `IndexConfig`), or None when it has none."""
    for config in table.list_indices():
        if list(config.columns) == [VECTOR_COLUMN] and _type_name(config.index_type).startswith("IVF"):
            return config
    return None


def index_state(table: "lancedb.table.Table") -> dict[str, Any] | None:
    """{"name", "type", "rows_indexed", "rows_not_indexed"} of `table`'s vector index, or None when it has none."""
    config = vector_index(table)
    if config is None:
        return None
    return {
        "name": config.name,
        "type": _type_name(config.index_type),
        "rows_indexed": int(config.num_indexed_rows),
        "rows_not_indexed": int(config.num_unindexed_rows),
    }


def build_index(context: "StoreContext", *, rebuild: bool = False, progress: Progress | None = None) -> IndexReport:
    """Build the vector index of the current images table, or bring an existing one up to date.

    Without `rebuild`, an existing index gets the rows added since it was built (LanceDB's `optimize`, which
    also compacts the table's files; no version is pruned). With `rebuild=True` (or when there is none) a new
    index is trained over every row, replacing the old one. The caller holds the store's write lock.
    """
    return index_table(tables.open_images(context.db), rebuild=rebuild, progress=progress)


def index_table(table: "lancedb.table.Table", *, rebuild: bool = False, progress: Progress | None = None) -> IndexReport:
    """`build_index` for any images table (the current one, or a re-embed's new table before the switch)."""
    rows = table.count_rows()
    if rows == 0:
        raise IndexBuildError(
            "The store holds no images, so there is nothing to index. Ingest a folder first "
            "(clipstore ingest FOLDER), then run clipstore index."
        )
    existing = vector_index(table)
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
        if existing is not None and existing.name != layout.IMAGES_VECTOR_INDEX:
            table.drop_index(existing.name)  # an index made outside clipstore: ours replaces it
        partitions = num_partitions(rows)
        table.create_index(
            VECTOR_COLUMN,
            config=HnswSq(distance_type="cosine", num_partitions=partitions),
            name=layout.IMAGES_VECTOR_INDEX,
            replace=True,
        )
    if progress:
        progress(stage, 1, 1)
    state = index_state(table)
    assert state is not None  # just built
    return IndexReport(table.name, action, state["type"], partitions, state["rows_indexed"], state["rows_not_indexed"])


def update_index(table: "lancedb.table.Table", progress: Progress | None = None) -> bool:
    """Add the rows written since the last build or update to `table`'s vector index, when it has one and
    such rows exist (incremental: no retraining). Returns whether it did. A process killed meanwhile leaves
    the table searchable with the index as it was (Lance commits atomically); the next update finishes."""
    index = vector_index(table)
    if index is None or int(index.num_unindexed_rows) == 0:
        return False
    index_table(table, progress=progress)
    return True


def index_like(source: "lancedb.table.Table", target: "lancedb.table.Table", progress: Progress | None = None) -> bool:
    """Give `target` (a re-embed's new images table) a vector index when `source` (the table it replaces) has
    one, built or brought up to date before the switch so searches stay indexed across it. Returns whether it did."""
    if vector_index(source) is None or target.count_rows() == 0:
        return False
    index_table(target, progress=progress)
    return True


def indexed_search(table: "lancedb.table.Table", index: Any, query: "np.ndarray", limit: int) -> "pa.Table":
    """The `limit` rows of `table` nearest to `query` (shape (d,)) by cosine, through its vector `index`:
    columns `id` and `_distance` (cosine distance, 1 - cosine similarity), nearest first."""
    return (
        table.search(query, vector_column_name=VECTOR_COLUMN)
        .distance_type("cosine")
        .nprobes(nprobes(int(index.num_indexed_rows)))
        .ef(max(EF, limit * REFINE_FACTOR))
        .refine_factor(REFINE_FACTOR)
        .select(["id", "_distance"])  # named: LanceDB warns on stderr when the distance is projected implicitly
        .limit(limit)
        .to_arrow()
    )


def _type_name(index_type: str) -> str:
    """LanceDB's `IvfHnswSq` as the `IVF_HNSW_SQ` its `create_index` takes."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", str(index_type)).upper()
