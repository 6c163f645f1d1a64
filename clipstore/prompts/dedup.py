"""Near-duplicate filtering of embeddings: the seeds' prompt de-duplication at cosine 0.85 (seed 001, eq. 7).

Semantics, exactly: items are considered in insertion order (the existing bank first, then the new items in
the order given); an item is rejected iff its cosine similarity with an already *accepted* item is >= the
threshold; the earliest wins. Bank items are accepted by definition.

How it scales: the greedy decision only needs, for every new item, the earlier items it is similar to. Those
"near pairs" are found with blocked matrix products — over all pairs when that is cheap (exact), and otherwise
through an inverted-file index (k-means cells, each item compared with the items of the few cells nearest to
it), with every candidate pair checked exactly. Pairs missed by the index can only make the result keep a
near-duplicate it should have dropped; the benchmark measures the agreement with the exact reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLD = 0.85
EXACT_PAIR_BUDGET = 400_000_000
"""Up to this many pairwise products the near pairs are found exactly (all pairs, blocked)."""
MIN_NPROBE = 12
NPROBE_SHARE = 0.02
"""The inverted-file index compares each item with NPROBE_SHARE of its cells, and at least MIN_NPROBE."""

_BLOCK = 4096
_QUERY_CHUNK = 1 << 18  # new items whose index probe lists are held at once (~200 MB at 2% of 4096 cells)
_BOUNDARY = 1e-5  # similarities this close to the threshold are recomputed in float64


@dataclass(frozen=True)
class DedupResult:
    """Decisions for the new items (arrays of length n, in the order given).

    accepted: True for items kept. twin: for a rejected item, the index of the kept item it duplicates, in the
    combined order (0..m-1 = bank, m.. = new items); -1 for accepted items. similarity: cosine with that twin
    (0.0 for accepted items). exact: whether the near pairs were found exhaustively.
    """

    accepted: np.ndarray
    twin: np.ndarray
    similarity: np.ndarray
    exact: bool


def deduplicate(
    new: np.ndarray,
    bank: np.ndarray | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    exact: bool | None = None,
    nprobe: int | None = None,
    seed: int = 0,
) -> DedupResult:
    """Greedy insertion-order de-duplication of `new` (n, d) against `bank` (m, d) and itself.

    Rows must be L2-normalised float32 (cosine = dot product). `exact=None` chooses exhaustive search when the
    number of pairs is within EXACT_PAIR_BUDGET and the inverted-file index otherwise; `nprobe` is how many
    index cells each item is compared with (default: 2% of the cells, at least 12, so the share of the data
    each item sees, and with it the recall, does not shrink as the bank grows).

    Memory: besides its inputs (never copied when they are contiguous float32), it holds about 1/16 of them
    in working arrays, plus the near pairs found; the bank's order does not matter (bank items are all kept).
    """
    new = np.ascontiguousarray(new, dtype=np.float32)
    bank = np.zeros((0, new.shape[1]), np.float32) if bank is None else np.ascontiguousarray(bank, dtype=np.float32)
    m, n = len(bank), len(new)
    if n == 0:
        return DedupResult(np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0, np.float32), True)
    if exact is None:
        exact = n * m + n * n / 2 <= EXACT_PAIR_BUDGET
    vectors = _Rows(bank, new)
    if exact:
        pairs = _near_pairs_exhaustive(vectors, m, threshold)
    else:
        pairs = _near_pairs_indexed(vectors, m, threshold, nprobe, seed)
    return _greedy(pairs, vectors, m, n, threshold, exact)


class _Rows:
    """The bank's rows followed by the new ones, read as one (m + n, d) matrix without copying them together
    (for a bank of 1M and as many new prompts, that copy alone is 3 GB)."""

    def __init__(self, bank: np.ndarray, new: np.ndarray):
        self.bank, self.new, self.m = bank, new, len(bank)

    def __len__(self) -> int:
        return self.m + len(self.new)

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 (a view unless the range spans both parts)."""
        m = self.m
        if stop <= m:
            return self.bank[start:stop]
        if start >= m:
            return self.new[start - m : stop - m]
        return np.concatenate([self.bank[start:], self.new[: stop - m]])

    def take(self, index: np.ndarray) -> np.ndarray:
        """The rows at the (combined) positions `index`, as a new (len(index), d) array."""
        index = np.asarray(index, dtype=np.int64)
        in_bank = index < self.m
        if in_bank.all():
            return self.bank[index]
        if not in_bank.any():
            return self.new[index - self.m]
        out = np.empty((len(index), self.new.shape[1]), np.float32)
        out[in_bank] = self.bank[index[in_bank]]
        out[~in_bank] = self.new[index[~in_bank] - self.m]
        return out


def reference_deduplicate(new: np.ndarray, bank: np.ndarray | None = None, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """The definition, computed one item at a time in float64 (slow; for tests). Returns the accepted mask."""
    m = 0 if bank is None else len(bank)
    kept = np.zeros((m + len(new), new.shape[1]), dtype=np.float64)
    if m:
        kept[:m] = bank
    count = m
    accepted = np.zeros(len(new), dtype=bool)
    for i, row in enumerate(np.asarray(new, dtype=np.float64)):
        if count and float(np.max(kept[:count] @ row)) >= threshold:
            continue
        accepted[i] = True
        kept[count] = row
        count += 1
    return accepted


# --- near pairs -------------------------------------------------------------------------------------------------
# A "pair" (i, j, s) says item i (a new item, combined index >= m) has cosine s >= threshold with the earlier
# item j < i. Pairs are returned as three arrays.


def _near_pairs_exhaustive(vectors: _Rows, m: int, threshold: float):
    rows, cols, sims = [], [], []
    total = len(vectors)
    for start in range(m, total, _BLOCK):
        stop = min(start + _BLOCK, total)
        block = vectors.slice(start, stop)
        for other in range(0, stop, 4 * _BLOCK):
            other_stop = min(other + 4 * _BLOCK, stop)
            scores = block @ vectors.slice(other, other_stop).T
            i, j = np.nonzero(scores >= threshold - _BOUNDARY)
            i, j = i + start, j + other
            earlier = j < i
            rows.append(i[earlier])
            cols.append(j[earlier])
            sims.append(scores[i[earlier] - start, j[earlier] - other])
    return _concat(rows, cols, sims)


def _near_pairs_indexed(vectors: _Rows, m: int, threshold: float, nprobe: int | None, seed: int):
    """Each item lives in its nearest cell; each new item is compared with the earlier items of its nprobe
    nearest cells. New items go _QUERY_CHUNK at a time (their probe lists are what costs memory), each chunk
    against the items before its end, gathered cell by cell (no cell-sorted copy of the vectors is made)."""
    centroids = _kmeans(vectors, seed)
    if nprobe is None:
        nprobe = max(MIN_NPROBE, int(round(NPROBE_SHARE * len(centroids))))
    nprobe = min(nprobe, len(centroids))
    cells = len(centroids)
    home = np.empty(len(vectors), np.int32)
    for start in range(0, m, _BLOCK):
        home[start : min(start + _BLOCK, m)] = np.argmax(vectors.slice(start, min(start + _BLOCK, m)) @ centroids.T, axis=1)
    rows, cols, sims = [], [], []
    for first in range(m, len(vectors), _QUERY_CHUNK):
        stop = min(first + _QUERY_CHUNK, len(vectors))
        probes = np.empty((stop - first, nprobe), np.int32)
        for start in range(first, stop, _BLOCK):
            scores = vectors.slice(start, min(start + _BLOCK, stop)) @ centroids.T
            home[start : start + len(scores)] = np.argmax(scores, axis=1)
            probes[start - first : start - first + len(scores)] = np.argpartition(-scores, nprobe - 1, axis=1)[:, :nprobe]
        order = np.argsort(home[:stop], kind="stable")  # every item before `stop`, by cell
        bounds = np.concatenate([[0], np.cumsum(np.bincount(home[:stop], minlength=cells))])
        queries_by_cell = np.argsort(probes.reshape(-1), kind="stable")
        query_bounds = np.concatenate([[0], np.cumsum(np.bincount(probes.reshape(-1), minlength=cells))])
        del probes
        for cell in range(cells):
            members = order[bounds[cell] : bounds[cell + 1]]
            queries = queries_by_cell[query_bounds[cell] : query_bounds[cell + 1]] // nprobe + first
            if len(members) == 0 or len(queries) == 0:
                continue
            scores = vectors.take(queries) @ vectors.take(members).T
            qi, mj = np.nonzero(scores >= threshold - _BOUNDARY)
            i, j = queries[qi], members[mj]
            earlier = j < i
            rows.append(i[earlier])
            cols.append(j[earlier])
            sims.append(scores[qi[earlier], mj[earlier]])
    return _concat(rows, cols, sims)


def _kmeans(vectors: _Rows, seed: int, iterations: int = 8) -> np.ndarray:
    """Spherical k-means centroids on a sample: about 2*sqrt(N) cells, between 16 and 4096."""
    rng = np.random.default_rng(seed)
    cells = int(np.clip(2 * np.sqrt(len(vectors)), 16, 4096))
    sample = vectors.take(rng.choice(len(vectors), size=min(len(vectors), cells * 40), replace=False))
    centroids = sample[rng.choice(len(sample), size=cells, replace=False)].copy()
    for _ in range(iterations):
        nearest = np.concatenate(
            [np.argmax(sample[s : s + _BLOCK] @ centroids.T, axis=1) for s in range(0, len(sample), _BLOCK)]
        )
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, sample)
        counts = np.bincount(nearest, minlength=cells)
        empty = counts == 0
        sums[empty] = sample[rng.choice(len(sample), size=int(empty.sum()), replace=False)]
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return centroids.astype(np.float32)


def _concat(rows, cols, sims):
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64), np.concatenate(sims)


# --- the greedy decision ----------------------------------------------------------------------------------------


def _greedy(pairs, vectors: _Rows, m: int, n: int, threshold: float, exact: bool) -> DedupResult:
    rows, cols, sims = pairs
    # Similarities within float32 noise of the threshold decide membership: settle them in float64.
    close = np.abs(sims - threshold) < _BOUNDARY
    if close.any():
        precise = np.einsum(
            "ij,ij->i", vectors.take(rows[close]).astype(np.float64), vectors.take(cols[close]).astype(np.float64)
        )
        sims = sims.astype(np.float64)
        sims[close] = precise
    keep = sims >= threshold
    rows, cols, sims = rows[keep], cols[keep], sims[keep]
    order = np.lexsort((-sims, rows))  # by item, most similar earlier item first
    rows, cols, sims = rows[order], cols[order], sims[order]
    starts = np.searchsorted(rows, np.arange(m, m + n + 1))

    alive = np.ones(m + n, dtype=bool)  # bank items are accepted; new items until rejected
    twin = np.full(n, -1, dtype=np.int64)
    similarity = np.zeros(n, dtype=np.float32)
    for k in np.flatnonzero(starts[1:] > starts[:-1]):  # only items with an earlier near neighbour
        neighbours = cols[starts[k] : starts[k + 1]]
        hits = np.flatnonzero(alive[neighbours])
        if len(hits):
            alive[m + k] = False
            twin[k] = neighbours[hits[0]]
            similarity[k] = sims[starts[k] + hits[0]]
    return DedupResult(alive[m:].copy(), twin, similarity, exact)
