"""The prompt bank through the store: near-duplicates refused, both embeddings kept, search, removal, two writers."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

import clipstore
from clipstore.db import layout, tables
from clipstore.prompts.bank import prompt_id
from workers import insert_prompts
from sample_prompts import BLUE, OTHER, RED, RED_PARAPHRASE


def _bank_vectors(store) -> np.ndarray:
    data = tables.read_columns(store.db.open_table(layout.PROMPTS), ["minilm_embedding"])
    return np.asarray(data.column("minilm_embedding").to_pylist(), dtype=np.float32)


def test_add_prompts_keeps_the_first_of_each_near_duplicate_group(store):
    report = store.add_prompts([RED, BLUE, RED_PARAPHRASE, "  ", RED, OTHER], source="unit")
    assert report.inserted == 3
    assert [d.text for d in report.duplicates] == [RED_PARAPHRASE, RED]
    for duplicate in report.duplicates:
        assert duplicate.duplicate_of == prompt_id(RED) and duplicate.kept_text == RED
        assert duplicate.similarity >= 0.85
    assert [p.text for p in store.list_prompts()] == [RED, BLUE, OTHER]
    assert store.list_prompts()[0].source == "unit"

    again = store.add_prompts([RED_PARAPHRASE, "a photo of a cat on a sofa"])
    assert again.inserted == 1 and again.duplicates[0].duplicate_of == prompt_id(RED)
    assert store.count_prompts() == 4
    vectors = _bank_vectors(store)
    similarity = vectors @ vectors.T
    assert np.max(similarity - 2 * np.eye(len(vectors))) < 0.85


def test_bank_rows_hold_both_embeddings(store):
    store.add_prompts([RED])
    row = store.db.open_table(layout.PROMPTS).to_arrow().to_pylist()[0]
    clip = np.asarray(row["clip_embedding"])
    assert len(clip) == store.model.embed_dim and len(row["minilm_embedding"]) == 384
    assert float(clip @ store.encoder.encode_texts([RED])[0]) == pytest.approx(1.0, abs=1e-3)
    assert row["seq"] == 0 and row["id"] == prompt_id(RED)


def test_search_prompts_by_meaning(store):
    store.add_prompts([RED, BLUE, OTHER])
    hits = store.search_prompts("crimson disc on white", k=2)
    assert hits[0].text == RED and hits[0].score > hits[1].score


@pytest.mark.slow
def test_two_writers_cannot_let_near_duplicates_in(store, store_path):
    from clipstore.world.corpus import prompt_corpus

    corpus = prompt_corpus(600, seed=9)
    first, second = corpus[:400], corpus[200:]  # overlapping, and full of near-duplicates of each other
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [context.Process(target=insert_prompts, args=(str(store_path), texts, out)) for texts in (first, second)]
    for worker in workers:
        worker.start()
    rejected = out.get(timeout=300) + out.get(timeout=300)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    bank = clipstore.connect(store_path)
    vectors = _bank_vectors(bank)
    similarity = vectors @ vectors.T - 2 * np.eye(len(vectors))
    assert similarity.max() < 0.85
    kept = {prompt_id(p.text): p.text for p in bank.list_prompts(limit=10_000)}
    assert len(kept) == bank.count_prompts()
    assert rejected and all(kept_id in kept for _, kept_id in rejected)
    rejected_vectors = bank.minilm.encode([text for text, _ in rejected])
    twins = bank.minilm.encode([kept[kept_id] for _, kept_id in rejected])
    assert np.all(np.sum(rejected_vectors * twins, axis=1) >= 0.85 - 1e-4)
    assert set(kept.values()) | {text for text, _ in rejected} >= set(corpus)


def test_before_the_dedup_migration_only_exact_repeats_are_refused(store):
    store.db.open_table(layout.SETTINGS).delete("key = 'prompt_dedup_threshold'")
    report = store.add_prompts([RED, RED_PARAPHRASE, RED, BLUE, BLUE])
    assert report.inserted == 3
    assert [(d.text, d.index, d.duplicate_of) for d in report.duplicates] == [(RED, 2, prompt_id(RED)), (BLUE, 4, prompt_id(BLUE))]
    assert store.add_prompts([BLUE]).duplicates[0].duplicate_of == prompt_id(BLUE)


def test_control_characters_are_rejected_one_prompt_at_a_time_with_the_reason(store):
    given = [RED, "ansi \x1b[31mred\x1b[0m", "  ", "IHDR\x00\x00 \x1a", BLUE, "del\x7fete", "c1 \x85 next line", "tab\tseparated words", "lone \ud800 surrogate", 42]
    report = store.add_prompts(given)
    assert report.inserted == 3 and report.duplicates == ()
    assert [p.text for p in store.list_prompts()] == [RED, BLUE, "tab\tseparated words"]
    assert [(r.index, r.text) for r in report.rejected] == [(1, given[1]), (3, given[3]), (5, given[5]), (6, given[6]), (8, given[8]), (9, "42")]
    reasons = [r.reason for r in report.rejected]
    assert "U+001B" in reasons[0] and "U+0000" in reasons[1] and "U+007F" in reasons[2] and "U+0085" in reasons[3]
    assert "surrogate" in reasons[4] and "not a string" in reasons[5]
    assert report.to_dict()["rejected"][0] == {"index": 1, "text": given[1], "reason": reasons[0]}


# Their ids share the first 8 hex characters (2f530071...), found by hashing; the texts are unrelated.
SAME_PREFIX = ("a white fox on mars, at noon", "a pink castle in a forest, in oil paint")


TRICKY = ["a 100% cotton shirt on a hanger", "a 100 year old oak tree", "snake_case names in python code", "it's a dog's life in the park", "snakes in a desert dune"]


def _snapshot(store) -> dict:
    rows = store.db.open_table(layout.PROMPTS).to_arrow().to_pylist()
    return {row["id"]: row for row in rows}


def test_remove_by_id_and_unambiguous_prefix(store):
    store.add_prompts([RED, BLUE, *SAME_PREFIX], source="unit")
    before = _snapshot(store)
    ids = [prompt_id(t) for t in SAME_PREFIX]
    assert ids[0][:8] == ids[1][:8] and ids[0][8] != ids[1][8]

    for ambiguous in (ids[0][:6], ids[0][:8].upper()):
        with pytest.raises(clipstore.PromptSelectionError, match=rf"{ambiguous}.*matches 2 prompts"):
            store.remove_prompts(ids=[ambiguous])
    with pytest.raises(clipstore.PromptSelectionError, match="at least 6"):
        store.remove_prompts(ids=[ids[0][:5]])
    with pytest.raises(clipstore.PromptSelectionError, match="no prompt has an id.*0123456789"):
        store.remove_prompts(ids=[prompt_id(RED), "0123456789"])  # one bad id: nothing is removed
    assert _snapshot(store) == before

    report = store.remove_prompts(ids=[ids[0][:9], prompt_id(RED)])
    assert report.removed == 2 and not report.dry_run
    assert [(p.id, p.text, p.source) for p in report.prompts] == [(prompt_id(RED), RED, "unit"), (ids[0], SAME_PREFIX[0], "unit")]
    after = _snapshot(store)
    assert after == {key: row for key, row in before.items() if key not in (ids[0], prompt_id(RED))}  # others untouched


def test_remove_by_source_and_by_match_text_with_quotes_and_like_wildcards(store):
    store.add_prompts(TRICKY[:3], source="shop's \"catalogue\"")
    store.add_prompts(TRICKY[3:], source="other")
    assert store.count_prompts() == len(TRICKY)
    before = _snapshot(store)

    assert [p.text for p in store.remove_prompts(match="100%", dry_run=True).prompts] == [TRICKY[0]]
    assert [p.text for p in store.remove_prompts(match="_", dry_run=True).prompts] == [TRICKY[2]]
    assert [p.text for p in store.remove_prompts(match="DOG'S", dry_run=True).prompts] == [TRICKY[3]]
    assert [p.text for p in store.remove_prompts(match="%", dry_run=True).prompts] == [TRICKY[0]]
    assert [p.text for p in store.remove_prompts(source="other", match="snake", dry_run=True).prompts] == [TRICKY[4]]
    assert _snapshot(store) == before  # dry runs change nothing

    removed = store.remove_prompts(source="shop's \"catalogue\"")
    assert removed.removed == 3 and [p.text for p in removed.prompts] == TRICKY[:3]
    assert [p.text for p in store.list_prompts()] == TRICKY[3:]
    assert store.remove_prompts(source="no such source").removed == 0


def test_removed_prompt_frees_its_slot_for_a_near_duplicate(store):
    store.add_prompts([RED, BLUE, OTHER])
    assert store.add_prompts([RED_PARAPHRASE]).inserted == 0
    before = _snapshot(store)

    report = store.remove_prompts(match="large red circle")
    assert [p.text for p in report.prompts] == [RED]
    again = store.add_prompts([RED_PARAPHRASE])
    assert again.inserted == 1 and again.duplicates == ()
    assert [p.text for p in store.list_prompts()] == [BLUE, OTHER, RED_PARAPHRASE]
    after = _snapshot(store)
    assert {key: after[key] for key in before if key != prompt_id(RED)} == {key: row for key, row in before.items() if key != prompt_id(RED)}


def test_remove_needs_a_selector_and_a_real_match_text(store):
    store.add_prompts([RED])
    with pytest.raises(clipstore.PromptSelectionError, match="ids.*source.*match"):
        store.remove_prompts()
    with pytest.raises(clipstore.PromptSelectionError, match="empty"):
        store.remove_prompts(match="  ")
    assert store.remove_prompts(ids=[]).removed == 0
    assert store.count_prompts() == 1
