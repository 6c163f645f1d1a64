"""Cosine search over the store's image vectors: through the images table's vector index, or exact.

Indexed (the table has a vector index: past the store's index threshold, or `clipstore index`): LanceDB answers
(`vector_index.indexed_search`); the process reads only the index partitions it probes and the file rows of the
hits, never whole tables. Exact (no index, or `exact=True`): the vectors are held in memory as one (n, d) float32
matrix, reloaded only when the table's version changes; a query is one matrix-vector product and a partial sort,
faster than a flat LanceDB scan at the sizes below the threshold.

A path prefix is a LanceDB filter on the files table (`tables.prefix_filter`, a range on the indexed `path`
column). Through the index, LanceDB counts the matching paths, the index is asked for an over-fetch sized by the
share of the store they make up, and only the candidates' file rows are read under the prefix; when the matching
images are too few for that, their ids are read and their vectors compared exactly. Without an index, the
in-memory vectors of the matching images are compared.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from clipstore.db import layout, tables
from clipstore.db import vector_index as vindex
from clipstore.results import SearchHit
from clipstore.search import index

INDEXED_EXTRA_ROWS = 2
"""Indexed searches ask LanceDB for k + this many rows, so rows without a file (an interrupted ingest) rarely
shorten the list (when they do, it asks again for twice as many)."""
MAX_INDEXED_CANDIDATES = 2_000
"""A prefix search goes through the index when about k x (rows / matching images) candidates suffice to find k
matching ones, up to this many; with fewer matching images it compares exactly with each of them."""
ID_CHUNK = 1_000
"""Image ids per `id IN (...)` read of a prefix's vectors."""

if TYPE_CHECKING:
    import lancedb


@dataclass(frozen=True)
class Snapshot:
    """The state exact search needs at one (images table, its version, files version) triple.

    ids (n,) and vectors (n, d): every image row, L2-normalised; row_of: id -> row; linked (n,) bool: whether
    an image has any path (rows of an interrupted ingest may not yet). Paths are read per query, for the hits.
    """

    versions: tuple[str, int, int]
    ids: np.ndarray
    vectors: np.ndarray
    row_of: dict[str, int]
    linked: np.ndarray


class ImageSearcher:
    """Answers top-k cosine queries against a store's `images` and `files` tables."""

    def __init__(self, db: "lancedb.DBConnection"):
        self._db = db
        self._snapshot: Snapshot | None = None
        self._active = tables.ActiveTables(db)

    def search(
        self, query: np.ndarray, k: int = 10, path_prefix: str | None = None, *, exact: bool = False
    ) -> list[SearchHit]:
        """The k images most similar to `query` (shape (d,), any norm), best first, one hit per image.

        With `path_prefix`, only images stored under a path starting with it are considered, and the hit's
        path is the first of those paths. When the current images table has a vector index, LanceDB answers
        through it (approximate neighbours, exact cosine scores); `exact=True` compares every vector.
        """
        if k <= 0:
            return []
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        images = self._active.open("images")
        if exact:
            return self._search_exact(images, query, k, path_prefix)
        dataset = tables.lance_dataset(images)  # the table's version is checked once per query, here
        config = vindex.vector_index_cached(images, index.VECTOR_COLUMN, dataset)
        if config is None:
            return self._search_exact(images, query, k, path_prefix)
        rows = int(config.num_indexed_rows) + int(config.num_unindexed_rows)
        if path_prefix is None:
            return self._search_index(images, dataset, config, query, k, None, 1.0)
        matching = tables.count_files_under(self._db, path_prefix)  # an upper bound on the images under it
        if matching == 0:
            return []
        if k * rows <= MAX_INDEXED_CANDIDATES * matching:
            return self._search_index(images, dataset, config, query, k, path_prefix, matching / max(rows, 1))
        return self._search_among(images, query, k, path_prefix)

    def _search_index(
        self, images, dataset, config, query: np.ndarray, k: int, prefix: str | None, share: float
    ) -> list[SearchHit]:
        """Top k through the vector index: one hit per distinct image that has a path (under `prefix`, which
        about `share` of the rows have); asks LanceDB for more rows until k such hits are found or the table is
        exhausted. Without a prefix the hits' paths come with them (`first_path`, see `clipstore.db.first_paths`);
        only rows that have none (written before migration 0006) and prefix searches read `files`."""
        limit = math.ceil(k / min(max(share, 1e-9), 1.0)) + INDEXED_EXTRA_ROWS
        with_paths = prefix is None and layout.FIRST_PATH in dataset.schema.names
        select = ["id", layout.FIRST_PATH] if with_paths else ["id"]
        policy = vindex.IMAGES_QUERY if prefix is None else vindex.IMAGES_PREFIX_QUERY
        while True:
            found = vindex.indexed_search(
                images, index.VECTOR_COLUMN, config, query, limit, select, policy=policy, dataset=dataset
            )
            ids = found.column("id").to_pylist()
            scores = 1.0 - found.column("_distance").to_numpy().astype(np.float64)
            if with_paths:
                paths = {i: [p] for i, p in zip(ids, found.column(layout.FIRST_PATH).to_pylist()) if p is not None}
                unknown = [i for i in ids if i not in paths]
                if unknown:
                    paths.update(tables.paths_by_image(self._db, unknown, files=self._active.table(layout.FILES)))
                hits = _distinct_hits(ids, scores.tolist(), paths, k)
            else:
                hits = self._hits(ids, scores, k, prefix, window=len(ids))
            if len(hits) >= k or len(ids) < limit:
                return hits
            limit *= 2

    def _search_among(self, images, query: np.ndarray, k: int, prefix: str) -> list[SearchHit]:
        """Top k among the few images under `prefix` (a narrow prefix of an indexed store): their vectors read
        by id, compared exactly."""
        wanted = tables.image_ids_under(self._db, prefix)
        ids: list[str] = []
        chunks = []
        for start in range(0, len(wanted), ID_CHUNK):
            data = tables.read_columns(images, ["id", "embedding"], tables.sql_in("id", wanted[start : start + ID_CHUNK]))
            ids.extend(data.column("id").to_pylist())
            chunks.append(tables.vector_matrix(data.column("embedding")))
        if not ids:
            return []
        vectors = np.concatenate(chunks)
        scores = vectors @ query / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
        return self._hits(ids, scores, k, prefix)

    def _search_exact(self, images, query: np.ndarray, k: int, prefix: str | None) -> list[SearchHit]:
        """Top k by comparing every vector (held in memory, reloaded when the tables change)."""
        snapshot = self._current(images)
        if prefix is None:
            candidates = np.flatnonzero(snapshot.linked)
            scores = (snapshot.vectors @ query)[candidates]
        else:
            row_of = snapshot.row_of
            candidates = np.fromiter(
                (row_of[i] for i in tables.image_ids_under(self._db, prefix) if i in row_of), dtype=np.int64
            )
            scores = snapshot.vectors[candidates] @ query
        return self._hits([str(i) for i in snapshot.ids[candidates]], scores, k, prefix)

    def _hits(
        self, ids: list[str], scores: np.ndarray, k: int, prefix: str | None, window: int | None = None
    ) -> list[SearchHit]:
        """The k best of exactly scored candidates, with their paths (under `prefix`): the paths of the best
        `window` (default k + a few) are read, and of twice as many while some of those have none (rows of an
        interrupted ingest, paths removed meanwhile, or outside the prefix)."""
        window = max(1, window if window is not None else k + INDEXED_EXTRA_ROWS)
        while True:
            best = _top(scores, min(window, len(ids)))
            chosen = [ids[i] for i in best]
            paths = tables.paths_by_image(self._db, chosen, prefix, files=self._active.table(layout.FILES))
            hits = _distinct_hits(chosen, [float(scores[i]) for i in best], paths, k)
            if len(hits) >= k or len(best) == len(ids):
                return hits
            window *= 2

    def _current(self, images: "lancedb.table.Table") -> Snapshot:
        files = self._active.table(layout.FILES)
        versions = (images.name, images.version, files.version)
        if self._snapshot is None or self._snapshot.versions != versions:
            data = tables.read_columns(images, ["id", "embedding"])
            ids = np.asarray(data.column("id").to_pylist(), dtype=object)
            vectors = tables.vector_matrix(data.column("embedding"))
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            linked_ids = set(tables.read_columns(files, ["image_id"]).column("image_id").to_pylist())
            linked = np.fromiter((i in linked_ids for i in ids), dtype=bool, count=len(ids))
            row_of = {str(image_id): row for row, image_id in enumerate(ids)}
            self._snapshot = Snapshot(versions, ids, vectors, row_of, linked)
        return self._snapshot


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest scores, best first (ties in position order)."""
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        return part[np.argsort(-scores[part], kind="stable")]
    return np.argsort(-scores, kind="stable")


def _distinct_hits(ids: list[str], scores: list[float], paths: dict[str, list[str]], k: int) -> list[SearchHit]:
    """Up to k hits from candidates in rank order: one per image id that has a path, its first sorted path."""
    hits: list[SearchHit] = []
    seen: set[str] = set()
    for image_id, score in zip(ids, scores):
        if image_id in paths and image_id not in seen:
            seen.add(image_id)
            hits.append(SearchHit(image_id, paths[image_id][0], score))
            if len(hits) == k:
                break
    return hits


def normalise_prefix(prefix: str) -> str:
    """Absolute form of a user's path prefix; a trailing separator is kept (it means 'inside this folder')."""
    expanded = os.path.expanduser(prefix)
    absolute = os.path.abspath(expanded)
    if expanded.endswith(os.sep) and not absolute.endswith(os.sep):
        absolute += os.sep
    return absolute
