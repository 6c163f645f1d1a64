"""`clipstore train`: fit Model A on the store's (image, prompt) pairs, then tune Model B and the ensemble.

This module is the orchestration (`train_head`, its options and report) and the data preparation only training
needs; the models are fitted and tuned by `model_a`, `model_b` and `ensemble`, the head saved by `heads`.

1. Pairs: every stored image that carries a prompt, split by its prompt (see `clipstore.describe.pairs`).
   Training pairs are de-duplicated at the store's prompt threshold first (seed 001 §3.5.2: 90K -> 60K prompts
   improved the metric); `dedup_threshold=None` trains on all of them.
2. Model A: the CLIP vision tower (a trainable fp32 copy of the store's encoder) + FC1/Norm1/FC2/Norm2, cosine
   loss against all-MiniLM-L6-v2(prompt), AdamW with differential learning rates (`lr_vision` for the tower,
   `lr_fc` for the head), linear warm-up then cosine decay, image augmentation (rotation, crop, flip) and
   optional prompt augmentation (synonyms, phrase shuffle). Early stopping on the validation Avg-Cos (eq. 8);
   a checkpoint after every epoch lets an interrupted run resume. With `freeze_vision` only the head trains,
   on CLIP embeddings of `views` augmented copies of each image computed once (much faster on a CPU).
3. On the validation split (whose prompts are hidden from the bank, so nothing leaks): Model B's K and
   Distance_Dim are chosen by grid search, then the ensemble alpha of eq. 6.
4. The head is saved in the store (`clipstore.describe.heads`) with its config and validation metrics.
"""

from __future__ import annotations

import os
import random
import shutil
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from clipstore.db import layout, tables
from clipstore.describe.ensemble import avg_cos, tune_alpha
from clipstore.describe.heads import FORMAT_VERSION, HeadConfig, save_head
from clipstore.describe.options import TrainOptions
from clipstore.describe.model_b import K_GRID, KnnParams, bank_view, knn_candidates, model_b_predictions, tune_knn
from clipstore.describe.pairs import Pairs, load_pairs
from clipstore.encoders.minilm import MINILM_DIM
from clipstore.errors import TrainingDataError
from clipstore.progress import Progress, silent
from clipstore.prompts.dedup import deduplicate
from clipstore.results import _AsDict
from clipstore.training.images import load_training_image
from clipstore.training.loop import EpochStats
from clipstore.training.runs import run_key

if TYPE_CHECKING:
    from clipstore.db.context import StoreContext


MIN_PAIRS = 10


@dataclass(frozen=True)
class TrainReport(_AsDict):
    """What `clipstore train` did and the validation scores (Avg-Cos, eq. 8) of each model it tuned."""

    head_id: str
    folder: str
    pairs: int
    train_pairs: int
    filtered_out: int
    validation_pairs: int
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    resumed_from_epoch: int
    vision_tuned: bool
    validation: dict[str, float]
    ensemble_alpha: float
    knn: dict[str, Any]
    history: tuple[EpochStats, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = field(default_factory=tuple)


# --- data ---------------------------------------------------------------------------------------------------


def split_for_training(pairs: Pairs) -> tuple[Pairs, Pairs]:
    """Train and validation pairs; a small store whose hash split left one of them empty gets every 10th
    training pair moved to validation."""
    if len(pairs) < MIN_PAIRS:
        raise TrainingDataError(
            f"Training needs at least {MIN_PAIRS} images that carry a prompt; this store has {len(pairs)}. Ingest "
            "images with prompts (Stable Diffusion PNG metadata, name.txt captions beside the images, or "
            "`clipstore ingest FOLDER --manifest pairs.csv`)."
        )
    train = pairs.split("train")
    validation = pairs.split("validation")
    if len(train) >= 2 and len(validation) >= 1:
        return train, validation
    pool = pairs.subset([i for i, s in enumerate(pairs.splits) if s != "test"])
    every = [i for i in range(len(pool)) if i % 10 == 9] or [len(pool) - 1]
    rest = [i for i in range(len(pool)) if i not in set(every)]
    return pool.subset(rest), pool.subset(every)


def minilm_targets(store: "StoreContext", texts: list[str]) -> np.ndarray:
    """Unit MiniLM embeddings of texts (computed once per distinct text)."""
    unique = sorted(set(texts))
    if not unique:
        return np.zeros((0, MINILM_DIM), np.float32)
    vectors = np.asarray(store.minilm.encode(unique), np.float32)
    index = {text: i for i, text in enumerate(unique)}
    return vectors[[index[t] for t in texts]]


def dedup_mask(targets: np.ndarray, threshold: float | None) -> np.ndarray:
    """Which pairs survive the training-data filter (eq. 7 at `threshold`; all of them for None)."""
    if threshold is None or len(targets) == 0:
        return np.ones(len(targets), bool)
    return deduplicate(targets, None, threshold).accepted


def augmented_embeddings(store: "StoreContext", pairs: Pairs, views: int, seed: int, progress: Progress) -> np.ndarray:
    """(n, 1 + views, d): each image's stored embedding, then CLIP embeddings of `views` augmented copies
    (copies of the stored one where the file cannot be read)."""
    import torch

    from clipstore.training.augment import image_augmenter, mentions_sides

    n, d = pairs.embeddings.shape
    out = np.repeat(pairs.embeddings[:, None, :], 1 + views, axis=1).astype(np.float32)
    if views == 0 or n == 0:
        return out
    identity = store.model
    augment = image_augmenter(identity.image_size, identity.mean, identity.std)
    encoder = store.encoder
    rng = random.Random(seed)
    batch, slots = [], []
    for i in range(n):
        image = load_training_image(pairs.paths[i], min_side=store.model.decode_min_side, max_side=int(identity.image_size * 1.3))
        if image is not None:
            flip = not mentions_sides(pairs.prompts[i])
            for v in range(views):
                batch.append(augment(image, flip, rng))
                slots.append((i, 1 + v))
        if len(batch) >= 128 or (i == n - 1 and batch):
            vectors = encoder.encode_pixels(torch.stack(batch))
            for (row, view), vector in zip(slots, vectors):
                out[row, view] = vector
            batch, slots = [], []
        progress("augment", i + 1, n)
    return out


# --- the whole command ----------------------------------------------------------------------------------------


def train_head(store: "StoreContext", options: TrainOptions, progress: Progress | None = None) -> TrainReport:
    """Train Model A on the store's pairs, tune Model B and alpha, save the head; see the module docstring."""
    from clipstore.describe.model_a import fit_frozen_head, fit_tuned_tower, predict_pairs

    report = progress or silent
    pairs = load_pairs(store.db)
    train, validation = split_for_training(pairs)
    notes: list[str] = []

    threshold = options.dedup_threshold
    train_targets = minilm_targets(store, list(train.prompts))
    keep = dedup_mask(train_targets, threshold)
    filtered_out = int((~keep).sum())
    train = train.subset(np.flatnonzero(keep))
    train_targets = train_targets[keep]
    val_targets = minilm_targets(store, list(validation.prompts))
    variants = train_targets[:, None, :]
    if options.text_augment > 0:
        from clipstore.training.augment import text_variants

        rng = random.Random(options.seed)
        extra = [text_variants(text, options.text_augment, rng) for text in train.prompts]
        flat = minilm_targets(store, [v for row in extra for v in row]).reshape(len(train), options.text_augment, -1)
        variants = np.concatenate([variants, flat], axis=1)

    key = _run_key(store, options, train, validation)
    work = store.location.work_folder(layout.HEADS_FOLDER, f".training-{key}")
    checkpoint = os.path.join(work, "checkpoint.pt")

    if options.freeze_vision:
        views = options.views if options.augment else 0
        inputs = augmented_embeddings(store, train, views, options.seed, report)
        model, loop, stopped = fit_frozen_head(
            inputs, train_targets, validation.embeddings, val_targets, options,
            target_variants=np.ascontiguousarray(variants), checkpoint=checkpoint, progress=report,
        )
    else:
        model, loop, stopped = fit_tuned_tower(
            store, train, np.ascontiguousarray(variants), validation, val_targets, options,
            checkpoint=checkpoint, progress=report,
        )
    val_a = predict_pairs(store, model, validation)

    # Model B and the ensemble, tuned on validation with the validation and test answers hidden from the bank.
    test_prompts = list(pairs.split("test").prompts)
    bank = bank_view(store, list(validation.prompts) + test_prompts)
    validation_scores = {"model_a": avg_cos(val_a, val_targets)}
    knn, alpha, sweeps = KnnParams(), 1.0, {}
    if bank.visible:
        indices, distances = knn_candidates(bank, validation.embeddings, max(K_GRID))
        validation_scores["zero_shot"] = avg_cos(bank.minilm[indices[:, 0]], val_targets)
        knn, validation_scores["model_b"], sweeps["knn"] = tune_knn(bank, indices, distances, val_targets)
        val_b = model_b_predictions(bank, indices, distances, knn)
        alpha, validation_scores["ensemble"], sweeps["alpha"] = tune_alpha(val_a, val_b, val_targets)
    else:
        notes.append("The prompt bank is empty: Model B and the ensemble could not be tuned (alpha = 1, Model A alone).")

    created = tables.utc_now()
    head_id = created.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    config = HeadConfig(
        head_id,
        store.model.portable(store.path),  # the store may move: see ModelIdentity.portable
        store.model.embed_dim,
        MINILM_DIM,
        options.mix,
        not options.freeze_vision,
        float(alpha),
        knn,
        {**options.to_dict(), "format": FORMAT_VERSION},
        {**validation_scores, "n": len(validation), "sweeps": sweeps, "history": [h.to_dict() for h in loop.history]},
        created.isoformat(),
    )
    folder = save_head(store, model, config)
    shutil.rmtree(work, ignore_errors=True)
    return TrainReport(
        head_id,
        folder,
        len(pairs),
        len(train),
        filtered_out,
        len(validation),
        loop.epoch,
        loop.best_epoch,
        stopped,
        loop.resumed_from,
        not options.freeze_vision,
        {k: round(v, 6) for k, v in validation_scores.items()},
        float(alpha),
        knn.to_dict(),
        tuple(loop.history),
        tuple(notes),
    )


def _run_key(store: "StoreContext", options: TrainOptions, train: Pairs, validation: Pairs) -> str:
    """Identifies a training run: same store model, options and data -> same key -> its checkpoint resumes."""
    return run_key(store.model, store.path, options.to_dict(), ["\n".join(train.ids), "\n".join(validation.ids)])
