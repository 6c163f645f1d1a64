"""The prompt bank's vector indexes (clipstore.prompts.nearest): built once the bank reaches the store's index
threshold (forced small here), kept current by every insert, and searched with exact-cosine scores that agree
with an exact scan — on real LanceDB, real MiniLM and clipstore-mini."""

from __future__ import annotations

import numpy as np
import pytest

import clipstore
from clipstore.db import tables, vector_index
from clipstore.prompts.bank import load_bank
from clipstore.prompts.nearest import BANK_VECTOR_COLUMNS
from clipstore.world.corpus import prompt_corpus

THRESHOLD = 120
QUERIES = ["a red circle", "portrait of an old fisherman at dawn", "neon city street in the rain", "a bowl of fruit"]


def _states(store) -> dict:
    table = tables.open_prompts(store.db)
    return {column: vector_index.index_state(table, column) for column in BANK_VECTOR_COLUMNS}


def _exact_top(store, text: str, k: int) -> tuple[list[str], np.ndarray]:
    ids, _, vectors = load_bank(store.db)
    scores = vectors @ store.minilm.encode([text])[0]
    top = np.argsort(-scores, kind="stable")[:k]
    return [ids[i] for i in top], scores[top]


@pytest.fixture
def indexed_bank(store):
    """A store whose bank (about 200 generated prompts) passed an index threshold of 120 while being filled."""
    vector_index.set_index_threshold(store.db, THRESHOLD)
    corpus = prompt_corpus(320, seed=5)
    store.add_prompts(corpus[:100])
    assert _states(store) == {column: None for column in BANK_VECTOR_COLUMNS}  # below the threshold: no index
    store.add_prompts(corpus[100:])
    assert store.count_prompts() >= THRESHOLD
    return store


def test_the_bank_is_indexed_past_the_threshold_and_searches_agree_with_exact(indexed_bank):
    store = indexed_bank
    for column, state in _states(store).items():
        assert state is not None and state["type"] == "IVF_HNSW_SQ", column
        assert state["rows_indexed"] == store.count_prompts() and state["rows_not_indexed"] == 0
    for text in QUERIES:
        hits = store.search_prompts(text, k=10)
        ids, scores = _exact_top(store, text, 10)
        assert [hit.id for hit in hits] == ids
        assert [hit.score for hit in hits] == pytest.approx(scores.tolist(), abs=1e-5)  # exact cosines


def test_prompts_added_after_the_index_are_in_it_and_found(indexed_bank):
    store = indexed_bank
    before = store.count_prompts()
    added = "an origami giraffe made of newspaper standing on a chessboard"
    assert store.add_prompts([added]).inserted == 1
    for column, state in _states(store).items():
        assert state["rows_indexed"] == before + 1 and state["rows_not_indexed"] == 0, column  # kept current
    assert store.search_prompts("paper giraffe on a chess board", k=3)[0].text == added

    # Rows written without the bank's gate (another writer, an interrupted update) are scanned beside the index.
    table = tables.open_prompts(store.db)
    row = table.search().limit(1).to_arrow().to_pylist()[0]
    extra = "a lighthouse knitted from green wool"
    vector = store.minilm.encode([extra])[0]
    table.add([{**row, "id": "x" * 64, "seq": 10**6, "text": extra, "minilm_embedding": vector.tolist()}])
    assert store.search_prompts(extra, k=1)[0].text == extra


def test_removed_prompts_are_not_found_through_the_index(indexed_bank):
    store = indexed_bank
    first = store.search_prompts(QUERIES[1], k=2)
    store.remove_prompts(ids=[first[0].id])
    after = store.search_prompts(QUERIES[1], k=2)
    assert first[0].id not in {hit.id for hit in after} and after[0].id == first[1].id


def test_below_the_threshold_search_is_exact_and_unindexed(store):
    corpus = prompt_corpus(80, seed=6)
    store.add_prompts(corpus)
    assert _states(store) == {column: None for column in BANK_VECTOR_COLUMNS}
    ids, scores = _exact_top(store, QUERIES[0], 5)
    hits = store.search_prompts(QUERIES[0], k=5)
    assert [hit.id for hit in hits] == ids and [hit.score for hit in hits] == pytest.approx(scores.tolist(), abs=1e-5)
    assert store.search_prompts(QUERIES[0], k=0) == []


def test_search_of_an_empty_bank_finds_nothing(store):
    assert store.search_prompts("anything", k=5) == []


def test_a_reembed_indexes_the_new_bank_table(indexed_bank, tmp_path):
    store = indexed_bank
    old_table = tables.open_prompts(store.db).name
    report = store.reembed("clipstore-mini:random")
    assert report.prompts_embedded == store.count_prompts()
    table = tables.open_prompts(store.db)
    assert table.name != old_table
    for column in BANK_VECTOR_COLUMNS:
        state = vector_index.index_state(table, column)
        assert state is not None and state["rows_indexed"] == store.count_prompts(), column
    hits = store.search_prompts(QUERIES[2], k=5)
    assert [hit.id for hit in hits] == _exact_top(store, QUERIES[2], 5)[0]


def test_clipstore_index_indexes_a_bank_that_reached_the_threshold_before_it_was_set(store, photo_folder):
    store.add_prompts(prompt_corpus(80, seed=7))
    store.ingest(photo_folder)
    assert _states(store) == {column: None for column in BANK_VECTOR_COLUMNS}
    store.set_index_threshold(50)  # the bank is already past it: no write has checked since
    store.build_index()
    states = _states(store)
    assert all(state is not None and state["rows_not_indexed"] == 0 for state in states.values())
