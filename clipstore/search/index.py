"""The vector index of the current images table (`Store.build_index`, `clipstore index`, automatic past the
store's index threshold): `clipstore.db.vector_index` applied to the images tables' `embedding` column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clipstore.db import first_paths, layout, tables, vector_index
from clipstore.errors import IndexBuildError
from clipstore.progress import Progress
from clipstore.results import _AsDict

if TYPE_CHECKING:
    import lancedb

    from clipstore.db.context import StoreContext

VECTOR_COLUMN = "embedding"


@dataclass(frozen=True)
class IndexReport(_AsDict):
    """What one `Store.build_index` did.

    table: the images table indexed (the current one). action: "built" (no index before), "rebuilt"
    (`rebuild=True` replaced one) or "updated" (rows added since the last build were added to the index).
    index_type: e.g. "IVF_HNSW_SQ". num_partitions: the IVF partitions of a new index (None when updated).
    rows_indexed / rows_not_indexed: rows the index covers / rows searched by a scan beside it, after the call.
    paths_filled: rows written before migration 0006 whose `first_path` a rebuild filled in (0 otherwise).
    """

    table: str
    action: str
    index_type: str
    num_partitions: int | None
    rows_indexed: int
    rows_not_indexed: int
    paths_filled: int = 0


def vector_index_of(table: "lancedb.table.Table") -> Any | None:
    """The vector index on an images table's `embedding` column, or None."""
    return vector_index.vector_index(table, VECTOR_COLUMN)


def index_state(table: "lancedb.table.Table") -> dict[str, Any] | None:
    """{"name", "type", "rows_indexed", "rows_not_indexed"} of an images table's vector index, or None."""
    return vector_index.index_state(table, VECTOR_COLUMN)


def build_index(context: "StoreContext", *, rebuild: bool = False, progress: Progress | None = None) -> IndexReport:
    """Build the vector index of the current images table, or bring an existing one up to date (see
    `vector_index.create_index`). The caller holds the store's write lock."""
    return index_table(context.db, tables.open_images(context.db), rebuild=rebuild, progress=progress)


def index_table(
    db: "lancedb.DBConnection",
    table: "lancedb.table.Table",
    *,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> IndexReport:
    """`build_index` for any images table of the store `db` (the current one, or a re-embed's new table before
    the switch); the lookups searches make by id and path get their scalar indexes too. A first build or a
    rebuild also fills the `first_path` of rows written before migration 0006."""
    if table.count_rows() == 0:
        raise IndexBuildError(
            "The store holds no images, so there is nothing to index. Ingest a folder first "
            "(clipstore ingest FOLDER), then run clipstore index."
        )
    # Rows from before migration 0006 get their first path now, so the new index covers their new versions.
    filled = first_paths.fill_missing(db, table) if rebuild or vector_index_of(table) is None else 0
    action, partitions = vector_index.create_index(table, VECTOR_COLUMN, rebuild=rebuild, progress=progress)
    index_lookups(db, table, 0)  # an indexed store looks its hits up through indexes too
    state = index_state(table)
    assert state is not None  # just built
    return IndexReport(
        table.name, action, state["type"], partitions, state["rows_indexed"], state["rows_not_indexed"], filled
    )


def update_index(db: "lancedb.DBConnection", table: "lancedb.table.Table", progress: Progress | None = None) -> str | None:
    """After rows were added to an images table: bring its index up to date (incremental, no retraining), or
    build one when the table has reached the store's index threshold; likewise the scalar indexes that indexed
    searches read by (`id` here, `path` and `image_id` of the files table). Returns the vector index's action."""
    threshold = vector_index.index_threshold(db)
    action = vector_index.ensure_index(table, VECTOR_COLUMN, threshold, progress)
    index_lookups(db, table, threshold)
    return action


def index_lookups(db: "lancedb.DBConnection", table: "lancedb.table.Table", threshold: int) -> None:
    """BTREE indexes on what searches filter and look up by, past `threshold` rows: the images table's `id`
    (a narrow prefix reads its images' vectors by id) and the files table's `path` (prefix filters) and
    `image_id` (the paths of the hits)."""
    vector_index.ensure_scalar_index(table, "id", threshold)
    files = db.open_table(layout.FILES)
    for column in ("path", "image_id"):
        vector_index.ensure_scalar_index(files, column, threshold)


def index_like(db: "lancedb.DBConnection", source: "lancedb.table.Table", target: "lancedb.table.Table", progress: Progress | None = None) -> bool:
    """Give `target` (a re-embed's new images table) a vector index, built before the switch so searches stay
    indexed across it, when `source` (the table it replaces) has one or `target` has reached the store's index
    threshold. Returns whether it did."""
    if target.count_rows() == 0:
        return False
    if vector_index_of(source) is None:
        return update_index(db, target, progress) is not None
    index_table(db, target, progress=progress)
    return True
