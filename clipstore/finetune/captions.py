"""Pseudo-captions for MCIP: each image's own prompt plus the bank prompts most similar to it in CLIP space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from clipstore.finetune.data import ImageSet

if TYPE_CHECKING:
    from clipstore.db.context import StoreContext

@dataclass(frozen=True)
class Captions:
    """Pseudo-captions: the caption texts, their (locked) CLIP text embeddings (c, d), and per image the
    indices of its captions, padded with -1 (n, m_max)."""

    texts: tuple[str, ...]
    embeddings: np.ndarray
    positives: np.ndarray


def pseudo_captions(store: "StoreContext", images: ImageSet, count: int, threshold: float | None) -> Captions:
    """Each image's own prompt (if any) plus its top-`count` bank prompts by CLIP similarity (>= threshold)."""
    from clipstore.describe.model_b import bank_view

    # The held-out images' own prompts are not offered as pseudo-captions of other images.
    bank = bank_view(store, [p for p, s in zip(images.prompts, images.splits) if p and s != "train"])
    visible = ~bank.hidden
    texts: list[str] = []
    index: dict[str, int] = {}
    vectors: list[np.ndarray] = []

    def add(text: str, vector: np.ndarray) -> int:
        if text not in index:
            index[text] = len(texts)
            texts.append(text)
            vectors.append(vector)
        return index[text]

    own = [p for p in images.prompts if p]
    own_vectors = store.encoder.encode_texts(own) if own else np.zeros((0, store.model.embed_dim), np.float32)
    own_lookup = dict(zip(own, own_vectors))
    per_image: list[list[int]] = []
    scores = images.embeddings @ bank.clip.T if len(bank.ids) and count > 0 else np.zeros((len(images.ids), 0))
    if scores.shape[1]:
        scores[:, ~visible] = -np.inf
    for row in range(len(images.ids)):
        chosen = []
        if images.prompts[row]:
            chosen.append(add(images.prompts[row], own_lookup[images.prompts[row]]))
        if scores.shape[1]:
            top = np.argsort(-scores[row], kind="stable")[:count]
            for j in top:
                if np.isfinite(scores[row, j]) and (threshold is None or scores[row, j] >= threshold):
                    slot = add(bank.texts[j], bank.clip[j])
                    if slot not in chosen:
                        chosen.append(slot)
        per_image.append(chosen)
    width = max((len(c) for c in per_image), default=0)
    positives = np.full((len(per_image), max(width, 1)), -1, np.int64)
    for row, chosen in enumerate(per_image):
        positives[row, : len(chosen)] = chosen
    embeddings = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, store.model.embed_dim), np.float32)
    return Captions(tuple(texts), embeddings, positives)
