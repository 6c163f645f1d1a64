"""clipstore.describe.model_b: eq. 4-5 against hand-computed values, and neighbour search (in memory, via LanceDB)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipstore.describe.model_b import KnnParams, bank_neighbours, bank_view, fuse, knn_weights, matrix_neighbours, predict
from clipstore.describe.pairs import load_pairs


def test_eq4_weights_by_hand():
    params = KnnParams(k=2, distance_dim=2.0, delta=0.0, coef=1.0)
    assert knn_weights(np.array([0.5, 1.0, 2.0]), params) == pytest.approx([4.0, 1.0, 0.25])
    with_delta = KnnParams(k=2, distance_dim=2.0, delta=0.5, coef=3.0)
    assert knn_weights(np.array([0.5]), with_delta)[0] == pytest.approx(3.0 / 0.5**2.5)  # = 16.9706
    assert knn_weights(np.array([0.0]), params)[0] == pytest.approx(1e12)  # clamped, finite


def test_eq5_fusion_by_hand():
    params = KnnParams(k=2, distance_dim=2.0, delta=0.0, coef=1.0)
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0]])
    fused = fuse(np.array([0.5, 1.0]), embeddings, params)
    assert fused == pytest.approx([2.0, 0.5])  # (4 * e1 + 1 * e2) / K
    assert predict(np.array([0.5, 1.0]), embeddings, params) == pytest.approx(np.array([4.0, 1.0]) / math.sqrt(17))
    batched = predict(np.array([[0.5, 1.0], [1.0, 0.5]]), np.stack([embeddings, embeddings]), params)
    assert batched[1] == pytest.approx(np.array([1.0, 4.0]) / math.sqrt(17))
    # Distance_Dim = 0: every neighbour weighs the same (a plain mean).
    assert predict(np.array([0.3, 1.7]), embeddings, KnnParams(k=2, distance_dim=0.0, delta=0.0)) == pytest.approx([0.5**0.5] * 2)
    # Large exponents overflow eq. 4 in float64, but the prediction's direction stays exact.
    far = predict(np.array([1e-3, 2e-3]), embeddings, KnnParams(k=2, distance_dim=400.0, delta=0.0))
    assert np.all(np.isfinite(far)) and far[0] == pytest.approx(1.0)


def test_matrix_neighbours_exact_and_masked():
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(50, 8))
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    queries = keys[:3] + 0.01
    indices, distances = matrix_neighbours(queries, keys, 5)
    assert list(indices[:, 0]) == [0, 1, 2]
    assert np.all(np.diff(distances, axis=1) >= 0)
    hidden = np.zeros(50, bool)
    hidden[[0, 1, 2]] = True
    indices, _ = matrix_neighbours(queries, keys, 5, hidden)
    assert not set(indices.ravel()) & {0, 1, 2}


def test_model_b_retrieves_through_lancedb_like_the_exact_matrix(trained):
    store, _ = trained
    pairs = load_pairs(store.db)
    bank = bank_view(store, [])
    for row in range(5):
        found = bank_neighbours(store.db, pairs.embeddings[row], 10)
        indices, distances = matrix_neighbours(pairs.embeddings[row][None], bank.clip, 10)
        assert list(found.ids) == [bank.ids[i] for i in indices[0]]
        assert found.distances == pytest.approx(distances[0], abs=1e-5)


def test_model_b_neighbours_through_the_bank_index_match_the_exact_scan(indexed_copy):
    store, copy = indexed_copy
    pairs = load_pairs(store.db)
    for row in range(0, 60, 6):
        exact = bank_neighbours(store.db, pairs.embeddings[row], 20)
        indexed = bank_neighbours(copy.db, pairs.embeddings[row], 20)
        assert indexed.ids == exact.ids
        assert indexed.distances == pytest.approx(exact.distances, abs=1e-5)
        assert np.allclose(indexed.minilm, exact.minilm, atol=1e-6)
