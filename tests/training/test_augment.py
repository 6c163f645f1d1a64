"""clipstore.training.augment: the prompt augmentations of Model A training."""

from __future__ import annotations

import random

from clipstore.training.augment import mentions_sides, shuffle_words, text_variants


def test_text_augmentations_keep_meaningful_structure():
    rng = random.Random(0)
    prompt = "a small red circle, on a striped background, detailed drawing"
    shuffled = shuffle_words(prompt, rng)
    assert shuffled.startswith("a small red circle") and sorted(shuffled.split(", ")) == sorted(prompt.split(", "))
    variants = text_variants(prompt, 8, rng)
    assert len(variants) == 8 and any(v != prompt for v in variants)
    assert mentions_sides("a star on the left") and mentions_sides("Right side") and not mentions_sides("bright star")
