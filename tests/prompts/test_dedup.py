"""The near-duplicate gate: exact semantics, the brute-force reference on 20k real prompts, the index mode."""

from __future__ import annotations

import numpy as np
import pytest

from clipstore.prompts.dedup import deduplicate, reference_deduplicate


def _unit(*rows):
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_earliest_wins_and_only_kept_items_reject():
    # b is close to a, c is close to b but not to a: a kept, b rejected (twin a), c kept (b was not kept).
    a, b, c = _unit([1, 0, 0], [1, 0.55, 0], [1, 1.3, 0])
    assert a @ b >= 0.85 and b @ c >= 0.85 and a @ c < 0.85
    result = deduplicate(np.stack([a, b, c]))
    assert result.accepted.tolist() == [True, False, True]
    assert result.twin.tolist() == [-1, 0, -1]
    assert result.similarity[1] == pytest.approx(float(a @ b), abs=1e-6)


def test_bank_items_are_kept_and_twins_index_the_bank_first():
    bank = _unit([1, 0, 0], [0, 1, 0])
    new = _unit([0.02, 1, 0], [0, 0, 1], [0, 0.03, 1])
    result = deduplicate(new, bank)
    assert result.accepted.tolist() == [False, True, False]
    assert result.twin.tolist() == [1, -1, 3]  # 0..1 bank, 2.. new items


def test_exact_repeats_and_the_threshold_boundary():
    a = _unit([1, 2, 3])[0]
    assert deduplicate(np.stack([a, a, a])).accepted.tolist() == [True, False, False]
    angle = np.arccos(0.85)
    at = np.array([np.cos(angle), np.sin(angle)], dtype=np.float64)
    pair = np.stack([[1.0, 0.0], at]).astype(np.float32)
    exactly = deduplicate(pair, threshold=float(np.float32(pair[0] @ pair[1])))
    assert exactly.accepted.tolist() == [True, False]  # ">= threshold" rejects


@pytest.fixture(scope="module")
def corpus_vectors():
    from clipstore.encoders.minilm import load_minilm_encoder
    from clipstore.world.corpus import prompt_corpus

    texts = prompt_corpus(20_000, seed=1)
    return load_minilm_encoder().encode(texts, batch_size=256)


@pytest.mark.slow
def test_matches_the_brute_force_reference_on_20k_real_prompts(corpus_vectors):
    bank, new = corpus_vectors[:4000], corpus_vectors[4000:]
    reference = reference_deduplicate(new, bank)
    result = deduplicate(new, bank, exact=True)
    assert 0.2 < 1 - reference.mean() < 0.9  # the corpus really has many near-duplicates
    assert np.array_equal(result.accepted, reference)
    rejected = np.flatnonzero(~result.accepted)
    combined = np.concatenate([bank, new])
    twins = combined[result.twin[rejected]]
    assert np.all(np.sum(twins * new[rejected], axis=1) >= 0.85 - 1e-6)
    kept = np.flatnonzero(result.accepted)
    assert np.all(result.twin[rejected] < 4000) or np.all(np.isin(result.twin[rejected][result.twin[rejected] >= 4000] - 4000, kept))


@pytest.mark.slow
def test_index_mode_agrees_with_the_reference(corpus_vectors):
    reference = reference_deduplicate(corpus_vectors)
    result = deduplicate(corpus_vectors, exact=False)
    assert not result.exact
    assert np.mean(result.accepted == reference) >= 0.999
