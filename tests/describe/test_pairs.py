"""clipstore.describe.pairs: the (image, prompt) pairs of a store and their fixed split."""

from __future__ import annotations

import os

from clipstore.describe.pairs import load_pairs, split_for


def test_pairs_split_is_stable_and_covers_the_store(world_store):
    store, _ = world_store
    pairs = load_pairs(store.db)
    assert len(pairs) == 240
    assert set(pairs.splits) == {"train", "validation", "test"}
    assert pairs.splits == tuple(split_for(i, p) for i, p in zip(pairs.ids, pairs.prompts))
    assert split_for("any-id", "same prompt") == split_for("other-id", "same prompt")
    assert all(path and os.path.isfile(path) for path in pairs.paths)
