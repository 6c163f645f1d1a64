"""Validation metrics on unit embeddings (numpy arrays): image->image mAP@k / R@1 and caption recall; whether a
fine-tune improved on its base."""

from __future__ import annotations

import math

import numpy as np

IMPROVEMENT_MARGIN = 1e-4
"""How much the best validation score must exceed the base model's to count as an improvement."""


def validation_improved(before: float, after: float) -> bool:
    """Whether the fine-tuned model's best validation score beats the base model's (False when either is NaN)."""
    return bool(math.isfinite(before) and math.isfinite(after) and after > before + IMPROVEMENT_MARGIN)


def map_at_k(embeddings: np.ndarray, labels: list, k: int = 10) -> tuple[float, float]:
    """Image->image mAP@k and R@1 (a same-label image ranks first), each image a query against the others."""
    labels_array = np.array(labels, dtype=object)
    scores = embeddings @ embeddings.T
    np.fill_diagonal(scores, -np.inf)
    k = min(k, len(labels) - 1)
    if k <= 0:
        return float("nan"), float("nan")
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    relevant = labels_array[top] == labels_array[:, None]
    counts = np.array([(labels_array == label).sum() - 1 for label in labels_array])
    precision = np.cumsum(relevant, axis=1) / np.arange(1, k + 1)
    ap = (precision * relevant).sum(axis=1) / np.maximum(np.minimum(counts, k), 1)
    has = counts > 0
    return float(ap[has].mean()) if has.any() else float("nan"), float(relevant[has, 0].mean()) if has.any() else float("nan")


def caption_recall(embeddings: np.ndarray, caption_embeddings: np.ndarray, positives: np.ndarray) -> float:
    """Fraction of images whose most similar caption (among all captions) is one of their own."""
    if not len(embeddings) or not len(caption_embeddings):
        return float("nan")
    best = np.argmax(embeddings @ caption_embeddings.T, axis=1)
    return float(np.mean([best[i] in set(positives[i][positives[i] >= 0]) for i in range(len(best))]))


# --- the run ------------------------------------------------------------------------------------------------
