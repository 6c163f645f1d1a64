"""The validation and retrieval metrics checked by hand (clipstore.finetune.metrics, and the retrieval
evaluation's text->image and k-NN scores)."""

from __future__ import annotations

import numpy as np
import pytest

from clipstore.finetune.metrics import caption_recall, map_at_k
from clipstore.finetune.retrieval import knn_accuracy, text_to_image


def test_retrieval_metrics_by_hand():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert map_at_k(vectors, ["a", "a", "b", "b"], k=3) == (pytest.approx(1.0), pytest.approx(1.0))
    mean_ap, r1 = map_at_k(vectors, ["a", "b", "a", "b"], k=3)
    assert r1 == 0.0 and mean_ap == pytest.approx((1 / 3 + 1 / 2 + 1 / 3 + 1 / 2) / 4)  # ranks 3, 2, 3, 2
    assert text_to_image(vectors, vectors[[2, 0]], np.array([2, 0])) == (1.0, 1.0)
    assert knn_accuracy(vectors[:1], ["a"], vectors[1:], ["a", "b", "b"], k=1) == 1.0
    assert caption_recall(vectors[:2], vectors[2:], np.array([[0, -1], [1, -1]])) == 0.5


def test_an_improvement_must_be_real_and_measured():
    from clipstore.finetune.metrics import IMPROVEMENT_MARGIN, validation_improved

    assert validation_improved(0.130, 0.200)
    assert not validation_improved(0.130, 0.130) and not validation_improved(0.130, 0.130 + IMPROVEMENT_MARGIN / 2)
    assert not validation_improved(0.2, 0.1)
    assert not validation_improved(float("nan"), 0.5) and not validation_improved(0.5, float("nan"))
