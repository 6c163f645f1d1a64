"""Exact cosine search over the store's image vectors.

The vectors of the `images` table are held in memory as one (n, d) float32 matrix, reloaded only when the
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

    def search(self, query: np.ndarray, k: int = 10, path_prefix: str | None = None) -> list[SearchHit]:
        """The k images most similar to `query` (shape (d,), any norm), best first.

        With `path_prefix`, only images stored under a path starting with it are considered, and the hit's
        path is one of those paths.
        """
        snapshot = self._current()
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
        for index in order:
            image_id = str(snapshot.ids[index])
            paths = snapshot.paths_by_id[image_id]
            if path_prefix is not None:
                paths = [p for p in paths if p.startswith(path_prefix)]
            hits.append(SearchHit(image_id, paths[0], float(scores[index])))
        return hits

    def _current(self) -> Snapshot:
        images = tables.open_images(self._db)
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
