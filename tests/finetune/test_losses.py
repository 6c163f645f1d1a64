"""The fine-tuning losses checked by hand (clipstore.finetune.losses)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clipstore.finetune.losses import arc_margin_logits, info_nce_loss, mc_arc_margin_loss


def test_arc_margin_adds_the_angle_to_the_target_only():
    cosines = torch.tensor([[0.5, 0.2, -0.1]])
    logits = arc_margin_logits(cosines, torch.tensor([0]), scale=10.0, margin=0.3)
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(math.acos(0.5) + 0.3), abs=1e-5)
    assert logits[0, 1:].tolist() == pytest.approx([2.0, -1.0])


def test_multi_caption_loss_leaves_the_other_captions_out_of_the_softmax():
    embeddings = torch.tensor([[1.0, 0.0]])
    centres = torch.tensor([[1.0, 0.0], [0.9, math.sqrt(1 - 0.81)], [0.0, 1.0]])
    both = mc_arc_margin_loss(embeddings, centres, torch.tensor([[0, 1]]), scale=10.0, margin=0.0)
    # Each positive competes only with the negative (index 2): CE over [s*cos(pos), s*cos(neg)].
    expected = np.mean([math.log(1 + math.exp(10 * (0.0 - c)))  for c in (1.0, 0.9)])
    assert both.item() == pytest.approx(expected, rel=1e-4)
    padded = mc_arc_margin_loss(embeddings, centres, torch.tensor([[0, -1]]), scale=10.0, margin=0.0)
    assert padded.item() == pytest.approx(math.log(math.exp(10) + math.exp(9) + 1) - 10, rel=1e-4)


def test_info_nce_is_small_for_matching_pairs():
    images = torch.eye(3)
    assert info_nce_loss(images, images, 100.0).item() < 1e-6
    assert info_nce_loss(images, images.flip(0), 100.0).item() > 10
