"""The fine-tuning losses (torch tensors in, a scalar loss out; torch is imported when called): ArcMargin
(ArcFace) on class labels, multi-caption ArcMargin on pseudo-captions, symmetric InfoNCE for text re-alignment."""

from __future__ import annotations

import math

import numpy as np

def arc_margin_logits(cosines, targets, scale: float, margin: float):
    """ArcFace logits: scale * cos(theta), with cos(theta + margin) for each row's target column."""
    import torch

    cos_t = cosines.gather(1, targets[:, None]).clamp(-1 + 1e-7, 1 - 1e-7)
    theta = torch.acos(cos_t)
    # Past pi - margin, cos(theta + margin) would rise again: use the CosFace-style fallback there.
    with_margin = torch.where(theta + margin < math.pi, torch.cos(theta + margin), cos_t - margin * math.sin(margin))
    logits = cosines.scatter(1, targets[:, None], with_margin)
    return scale * logits


def arc_margin_loss(embeddings, centres, targets, scale: float, margin: float):
    """ArcMargin (ArcFace) loss of unit embeddings (B, d) against unit class centres (C, d)."""
    import torch.nn.functional as F

    cosines = F.normalize(embeddings, dim=-1) @ F.normalize(centres, dim=-1).T
    return F.cross_entropy(arc_margin_logits(cosines, targets, scale, margin), targets)


def mc_arc_margin_loss(embeddings, centres, positives, scale: float, margin: float):
    """Multi-caption ArcMargin: for every (image, one of its captions) the ArcMargin loss with that caption as
    the target, the image's other captions left out of the softmax; averaged over all such pairs.

    embeddings (B, d); centres (C, d) caption text embeddings (locked); positives (B, P) caption indices into
    centres, -1 for padding. None when no image of the batch has a caption.
    """
    import torch
    import torch.nn.functional as F

    cosines = F.normalize(embeddings, dim=-1) @ F.normalize(centres, dim=-1).T
    valid = positives >= 0
    is_positive = torch.zeros_like(cosines, dtype=torch.bool)
    rows = torch.arange(len(positives))[:, None].expand_as(positives)
    is_positive[rows[valid], positives[valid]] = True
    losses = []
    for slot in range(positives.shape[1]):
        use = valid[:, slot]
        if not use.any():
            continue
        targets = positives[use, slot]
        logits = arc_margin_logits(cosines[use], targets, scale, margin)
        others = is_positive[use].clone()
        others[torch.arange(len(targets)), targets] = False
        logits = logits.masked_fill(others, float("-inf"))
        losses.append(F.cross_entropy(logits, targets, reduction="none"))
    return torch.cat(losses).mean() if losses else None


def info_nce_loss(image_embeddings, text_embeddings, logit_scale: float):
    """Symmetric InfoNCE (CLIP's loss) for matching rows of unit image and text embeddings."""
    import torch
    import torch.nn.functional as F

    logits = logit_scale * F.normalize(image_embeddings, dim=-1) @ F.normalize(text_embeddings, dim=-1).T
    targets = torch.arange(len(logits))
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def caption_subset(positives, total: int, limit: int, rng: np.random.Generator):
    """Centre rows for one batch: all captions when there are few, else the batch's positives plus random
    others up to `limit`; returns (centre indices, positives re-indexed into them)."""
    import torch

    if total <= limit:
        return torch.arange(total), positives
    used = torch.unique(positives[positives >= 0])
    extra = rng.choice(total, size=min(limit, total), replace=False)
    rows = torch.unique(torch.cat([used, torch.from_numpy(extra)]))
    remap = torch.full((total,), -1, dtype=torch.long)
    remap[rows] = torch.arange(len(rows))
    mapped = torch.where(positives >= 0, remap[positives.clamp(min=0)], positives)
    return rows, mapped
