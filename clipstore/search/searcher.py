"""Cosine search over the store's image vectors: exact, or through the optional vector index.

Exact: the vectors of the `images` table are held in memory as one (n, d) float32 matrix, reloaded only when the
table's version changes; a query is one matrix-vector product and a partial sort. This is exact and, for the
stores clipstore targets (up to a few hundred thousand images), faster than a flat LanceDB scan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from clipstore.db import tables
from clipstore.results import SearchHit
from clipstore.db import layout
from clipstore.db import vector_index as vindex
from clipstore.search import index

INDEXED_EXTRA_ROWS = 8
"""Indexed searches ask LanceDB for k + this many rows, so rows without a file (an interrupted ingest) or
repeated ids rarely shorten the list (when they do, it asks again for twice as many)."""

if TYPE_CHECKING:
    import lancedb


@dataclass(frozen=True)
class Snapshot:
    """The searchable state at one (images table, its version, files version) triple.

    ids (n,) and vectors (n, d): every image row, L2-normalised; paths_by_id: each image's sorted paths;
    linked (n,) bool: whether an image has any path (rows of an interrupted ingest may not yet).
    """

    versions: tuple[str, int, int]
    ids: np.ndarray
    vectors: np.ndarray
    paths_by_id: dict[str, list[str]]
    linked: np.ndarray


class ImageSearcher:
    """Answers top-k cosine queries against a store's `images` and `files` tables."""

    def __init__(self, db: "lancedb.DBConnection"):
        self._db = db
        self._snapshot: Snapshot | None = None
        self._index: tuple[tuple[str, int], object | None] | None = None  # ((table, version), its vector index)

    def search(
        self, query: np.ndarray, k: int = 10, path_prefix: str | None = None, *, exact: bool = False
    ) -> list[SearchHit]:
        """The k images most similar to `query` (shape (d,), any norm), best first.

        With `path_prefix`, only images stored under a path starting with it are considered, and the hit's
        path is one of those paths. When the current images table has a vector index (`clipstore index`) and
        there is no `path_prefix`, LanceDB answers through the index (approximate, scores exact); `exact=True`
        always compares every vector.
        """
        images = tables.open_images(self._db)
        if not exact and path_prefix is None and k > 0:
            vector_index = self._vector_index(images)
            if vector_index is not None:
                return self._search_index(images, vector_index, query, k)
        return self._search_exact(images, query, k, path_prefix)

    def _vector_index(self, images: "lancedb.table.Table"):
        """`index.vector_index_of(images)`, read again only when the table (or its version) changes."""
        key = (images.name, images.version)
        if self._index is None or self._index[0] != key:
            self._index = (key, index.vector_index_of(images))
        return self._index[1]

    def _search_index(self, images: "lancedb.table.Table", vector_index, query: np.ndarray, k: int) -> list[SearchHit]:
        """Top k through the vector index: one hit per distinct image that has a path (rows of an interrupted
        ingest may not yet), its first sorted path; asks LanceDB for more rows until k such hits are found."""
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        limit = k + INDEXED_EXTRA_ROWS
        while True:
            rows = vindex.indexed_search(images, index.VECTOR_COLUMN, vector_index, query, limit, ["id"])
            ids = rows.column("id").to_pylist()
            scores = [1.0 - float(d) for d in rows.column("_distance").to_pylist()]
            paths_by_id = tables.paths_by_image(self._db, ids)
            hits: list[SearchHit] = []
            seen: set[str] = set()
            for image_id, score in zip(ids, scores):
                if image_id in paths_by_id and image_id not in seen:
                    seen.add(image_id)
                    hits.append(SearchHit(image_id, paths_by_id[image_id][0], score))
            if len(hits) >= k or len(ids) < limit:
                return hits[:k]
            limit *= 2

    def _search_exact(self, images: "lancedb.table.Table", query: np.ndarray, k: int, path_prefix: str | None) -> list[SearchHit]:
        """Top k by comparing every vector (held in memory, reloaded when the tables change)."""
        snapshot = self._current(images)
        if k <= 0 or len(snapshot.ids) == 0:
            return []
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        scores = snapshot.vectors @ query
        if path_prefix is None:
            keep = snapshot.linked
        else:
            keep = np.fromiter(
                (any(p.startswith(path_prefix) for p in snapshot.paths_by_id.get(i, ())) for i in snapshot.ids),
                dtype=bool,
                count=len(snapshot.ids),
            )
        candidates = np.flatnonzero(keep)
        if len(candidates) > k:
            candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        order = candidates[np.argsort(-scores[candidates], kind="stable")]
        hits = []
        for row in order:
            image_id = str(snapshot.ids[row])
            paths = snapshot.paths_by_id[image_id]
            if path_prefix is not None:
                paths = [p for p in paths if p.startswith(path_prefix)]
            hits.append(SearchHit(image_id, paths[0], float(scores[row])))
        return hits

    def _current(self, images: "lancedb.table.Table") -> Snapshot:
        files = self._db.open_table(layout.FILES)
        versions = (images.name, images.version, files.version)
        if self._snapshot is None or self._snapshot.versions != versions:
            data = tables.read_columns(images, ["id", "embedding"])
            ids = np.asarray(data.column("id").to_pylist(), dtype=object)
            vectors = tables.vector_matrix(data.column("embedding"))
            paths_by_id = tables.paths_by_image(self._db)
            linked = np.fromiter((i in paths_by_id for i in ids), dtype=bool, count=len(ids))
            self._snapshot = Snapshot(versions, ids, vectors, paths_by_id, linked)
        return self._snapshot


def normalise_prefix(prefix: str) -> str:
    """Absolute form of a user's path prefix; a trailing separator is kept (it means 'inside this folder')."""
    expanded = os.path.expanduser(prefix)
    absolute = os.path.abspath(expanded)
    if expanded.endswith(os.sep) and not absolute.endswith(os.sep):
        absolute += os.sep
    return absolute
