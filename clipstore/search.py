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

from . import tables
from .results import SearchHit

if TYPE_CHECKING:
    import lancedb


@dataclass(frozen=True)
class VectorSnapshot:
    """Image ids (n,) and their L2-normalised embeddings (n, d) at one table version."""

    version: int
    ids: np.ndarray
    vectors: np.ndarray


@dataclass(frozen=True)
class PathSnapshot:
    """For each image id, the sorted paths it is stored under, at one `files` table version."""

    version: int
    paths_by_id: dict[str, list[str]]


class ImageSearcher:
    """Answers top-k cosine queries against a store's `images` and `files` tables."""

    def __init__(self, db: "lancedb.DBConnection"):
        self._db = db
        self._vectors: VectorSnapshot | None = None
        self._paths: PathSnapshot | None = None

    def search(self, query: np.ndarray, k: int = 10, path_prefix: str | None = None) -> list[SearchHit]:
        """The k images most similar to `query` (shape (d,), any norm), best first.

        With `path_prefix`, only images stored under a path starting with it are considered, and the hit's
        path is one of those paths.
        """
        if k <= 0:
            return []
        vectors = self._current_vectors()
        paths = self._current_paths().paths_by_id
        if len(vectors.ids) == 0:
            return []
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        scores = vectors.vectors @ query
        candidates = np.arange(len(scores))
        if path_prefix is not None:
            keep = np.fromiter(
                (any(p.startswith(path_prefix) for p in paths.get(i, ())) for i in vectors.ids),
                dtype=bool,
                count=len(vectors.ids),
            )
            candidates = candidates[keep]
        else:
            candidates = candidates[np.fromiter((i in paths for i in vectors.ids), dtype=bool, count=len(vectors.ids))]
        if len(candidates) > k:
            top = np.argpartition(-scores[candidates], k - 1)[:k]
            candidates = candidates[top]
        order = candidates[np.argsort(-scores[candidates], kind="stable")]
        hits = []
        for index in order:
            image_id = str(vectors.ids[index])
            image_paths = paths[image_id]
            if path_prefix is not None:
                image_paths = [p for p in image_paths if p.startswith(path_prefix)]
            hits.append(SearchHit(image_id, image_paths[0], float(scores[index])))
        return hits

    def _current_vectors(self) -> VectorSnapshot:
        table = self._db.open_table(tables.IMAGES)
        version = table.version
        if self._vectors is None or self._vectors.version != version:
            data = tables.read_columns(table, ["id", "embedding"])
            ids = np.asarray(data.column("id").to_pylist(), dtype=object)
            dim = data.schema.field("embedding").type.list_size
            flat = data.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            self._vectors = VectorSnapshot(version, ids, np.asarray(flat, dtype=np.float32).reshape(len(ids), dim))
        return self._vectors

    def _current_paths(self) -> PathSnapshot:
        table = self._db.open_table(tables.FILES)
        version = table.version
        if self._paths is None or self._paths.version != version:
            paths_by_id: dict[str, list[str]] = {}
            for row in tables.read_columns(table, ["path", "image_id"]).to_pylist():
                paths_by_id.setdefault(row["image_id"], []).append(row["path"])
            for value in paths_by_id.values():
                value.sort()
            self._paths = PathSnapshot(version, paths_by_id)
        return self._paths


def normalise_prefix(prefix: str) -> str:
    """Absolute form of a user's path prefix; a trailing separator is kept (it means 'inside this folder')."""
    expanded = os.path.expanduser(prefix)
    absolute = os.path.abspath(expanded)
    if expanded.endswith(os.sep) and not absolute.endswith(os.sep):
        absolute += os.sep
    return absolute
