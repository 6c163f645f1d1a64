"""`clipstore train`: fit Model A on the store's (image, prompt) pairs, then tune Model B and the ensemble.

1. Pairs: every stored image that carries a prompt, split by image id (see `clipstore.pairs`). Training pairs
   are de-duplicated at the store's prompt threshold first (seed 001 §3.5.2: 90K -> 60K prompts improved the
   metric); `dedup_threshold=None` trains on all of them.
2. Model A: the CLIP vision tower (a trainable fp32 copy of the store's encoder) + FC1/Norm1/FC2/Norm2, cosine
   loss against all-MiniLM-L6-v2(prompt), AdamW with differential learning rates (`lr_vision` for the tower,
   `lr_fc` for the head), linear warm-up then cosine decay, image augmentation (rotation, crop, flip) and
   optional prompt augmentation (synonyms, phrase shuffle). Early stopping on the validation Avg-Cos (eq. 8);
   a checkpoint after every epoch lets an interrupted run resume. With `freeze_vision` only the head trains,
   on CLIP embeddings of `views` augmented copies of each image computed once (much faster on a CPU).
3. On the validation split (whose prompts are hidden from the bank, so nothing leaks): Model B's K and
   Distance_Dim are chosen by grid search, then the ensemble alpha of eq. 6.
4. The head is saved in the store (`clipstore.heads`) with its config and validation metrics.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from clipstore.db import layout, tables
from clipstore.prompts.dedup import deduplicate
from clipstore.errors import InvalidOptionError, TrainingDataError
from clipstore.describe.heads import FORMAT_VERSION, HeadConfig, heads_folder, record_head
from clipstore.describe.model_b import KnnParams, matrix_neighbours, predict
from clipstore.describe.pairs import Pairs, load_pairs
from clipstore.prompts.bank import load_bank, prompt_id
from clipstore.results import _AsDict
from clipstore.progress import Progress, silent
from clipstore.encoders.minilm import MINILM_DIM
from clipstore.training.images import load_training_image
from clipstore.training.loop import EpochStats, TrainingLoop
from clipstore.training.runs import run_key, saved_folder

if TYPE_CHECKING:
    import torch

    from clipstore.db.context import StoreContext


MIN_PAIRS = 10
K_GRID = (1, 2, 3, 5, 10, 20, 50, 100)
DISTANCE_DIM_GRID = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
ALPHA_GRID = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 21))


@dataclass(frozen=True)
class TrainOptions(_AsDict):
    """Hyper-parameters of `clipstore train` (defaults in parentheses are the CLI's)."""

    epochs: int = 20
    batch_size: int = 32
    lr_vision: float = 1e-5
    lr_fc: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    patience: int = 4
    freeze_vision: bool = False
    mix: float = 0.5
    dropout: float = 0.1
    augment: bool = True
    views: int = 4
    text_augment: int = 0
    dedup_threshold: float | None = 0.85
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise InvalidOptionError("epochs and batch_size must be at least 1")
        if not 0.0 <= self.mix <= 1.0:
            raise InvalidOptionError(f"mix (eq. 3's alpha) must be within [0, 1], not {self.mix}")


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




def fit_frozen_head(
    inputs: np.ndarray,
    targets: np.ndarray,
    val_inputs: np.ndarray,
    val_targets: np.ndarray,
    options: TrainOptions,
    *,
    target_variants: np.ndarray | None = None,
    checkpoint: str | None = None,
    progress: Progress | None = None,
):
    """Train a head on CLIP embeddings: inputs (n, V, d) views per image, targets (n, 384) or variants (n, T, 384).

    Returns (model, loop). Deterministic for a given seed.
    """
    import torch

    from clipstore.describe.model_a import ModelA, cosine_loss

    torch.manual_seed(options.seed)
    n, views, dim = inputs.shape
    model = ModelA(dim, targets.shape[1], options.mix, options.dropout)
    steps = math.ceil(n / options.batch_size)
    loop = TrainingLoop(model, options, steps, checkpoint, _parameter_groups(model, options))
    loop.resume()
    x_all = torch.from_numpy(inputs)
    t_all = torch.from_numpy(target_variants if target_variants is not None else targets[:, None, :])
    x_val = torch.from_numpy(val_inputs)
    t_val = torch.from_numpy(val_targets)
    report = progress or silent

    def train_epoch(epoch: int) -> float:
        rng = np.random.default_rng(options.seed * 100_003 + epoch)
        order = rng.permutation(n)
        view = rng.integers(0, views, size=n)
        variant = rng.integers(0, t_all.shape[1], size=n)
        losses = []
        for step, start in enumerate(range(0, n, options.batch_size)):
            idx = order[start : start + options.batch_size]
            x = x_all[idx, view[idx]]
            y = t_all[idx, variant[idx]]
            loss = cosine_loss(model.head(x), y)
            losses.append(loop.step(loss))
            report("train", epoch * steps + step + 1, options.epochs * steps)
        return float(np.mean(losses))

    def validate() -> float:
        with torch.inference_mode():
            return float(torch.nn.functional.cosine_similarity(model.head(x_val), t_val, dim=-1).mean())

    stopped = loop.run(train_epoch, validate)
    return model, loop, stopped


def fit_tuned_tower(
    store: "StoreContext",
    train: Pairs,
    targets_variants: np.ndarray,
    validation: Pairs,
    val_targets: np.ndarray,
    options: TrainOptions,
    *,
    checkpoint: str | None,
    progress: Progress,
):
    """Train the vision tower and the head together on augmented images (pixels decoded once, kept small)."""
    import torch

    from clipstore.training.augment import image_augmenter, mentions_sides
    from clipstore.encoders.clip import vision_tower
    from clipstore.describe.model_a import ModelA, cosine_loss

    identity = store.model
    torch.manual_seed(options.seed)
    visual = vision_tower(identity)
    model = ModelA(identity.embed_dim, MINILM_DIM, options.mix, options.dropout, visual)
    max_side = int(identity.image_size * 1.3)
    images = []
    for i in range(len(train)):
        images.append(load_training_image(train.paths[i], min_side=store.model.decode_min_side, max_side=max_side))
        progress("load", i + 1, len(train) + len(validation))
    keep = [i for i, image in enumerate(images) if image is not None]
    if len(keep) < 2:
        raise TrainingDataError(
            "Fine-tuning the vision tower needs the image files, and fewer than 2 training images can be read. "
            "Restore the files, or train the head alone with --freeze-vision (it uses the stored embeddings)."
        )
    val_pixels = []
    for i in range(len(validation)):
        image = load_training_image(validation.paths[i], min_side=store.model.decode_min_side, max_side=max_side)
        val_pixels.append(None if image is None else store.encoder.preprocess(image))
        progress("load", len(train) + i + 1, len(train) + len(validation))
    val_rows = [i for i, p in enumerate(val_pixels) if p is not None]
    val_x = torch.stack([val_pixels[i] for i in val_rows]) if val_rows else None
    val_fallback = validation.embeddings  # rows without a readable file are scored from the stored embedding
    augment = image_augmenter(identity.image_size, identity.mean, identity.std)
    flips = [not mentions_sides(train.prompts[i]) for i in range(len(train))]
    targets_all = torch.from_numpy(targets_variants)
    n = len(keep)
    steps = math.ceil(n / options.batch_size)
    loop = TrainingLoop(model, options, steps, checkpoint, _parameter_groups(model, options))
    loop.resume()

    def train_epoch(epoch: int) -> float:
        rng = np.random.default_rng(options.seed * 100_003 + epoch)
        py_rng = random.Random(options.seed * 100_003 + epoch)
        order = [keep[j] for j in rng.permutation(n)]
        losses = []
        for step, start in enumerate(range(0, n, options.batch_size)):
            idx = order[start : start + options.batch_size]
            if options.augment:
                pixels = torch.stack([augment(images[i], flips[i], py_rng) for i in idx])
            else:
                pixels = torch.stack([store.encoder.preprocess(images[i]) for i in idx])
            variant = rng.integers(0, targets_all.shape[1], size=len(idx))
            y = targets_all[idx, variant]
            loss = cosine_loss(model(pixels), y)
            losses.append(loop.step(loss))
            progress("train", epoch * steps + step + 1, options.epochs * steps)
        return float(np.mean(losses))

    def validate() -> float:
        predictions = np.zeros((len(validation), MINILM_DIM), np.float32)
        with torch.inference_mode():
            if val_x is not None:
                out = torch.cat([model(val_x[i : i + 64]) for i in range(0, len(val_x), 64)])
                predictions[val_rows] = torch.nn.functional.normalize(out, dim=-1).numpy()
            missing = [i for i in range(len(validation)) if i not in set(val_rows)]
            if missing:
                out = model.head(torch.from_numpy(val_fallback[missing]))
                predictions[missing] = torch.nn.functional.normalize(out, dim=-1).numpy()
        return float(np.mean(np.sum(predictions * val_targets, axis=1)))

    stopped = loop.run(train_epoch, validate)
    return model, loop, stopped


# --- tuning Model B and the ensemble on validation ---------------------------------------------------------


@dataclass(frozen=True)
class BankView:
    """The bank as matrices, with the prompts that must stay hidden (held-out answers) masked out."""

    ids: list[str]
    texts: list[str]
    minilm: np.ndarray
    clip: np.ndarray
    hidden: np.ndarray

    @property
    def visible(self) -> int:
        return int(len(self.ids) - self.hidden.sum())


def bank_view(store: "StoreContext", hide_prompts: list[str]) -> BankView:
    ids, texts, minilm, clip = load_bank(store.db, with_clip=True)
    hidden_ids = {prompt_id(text) for text in hide_prompts}
    hidden = np.fromiter((i in hidden_ids for i in ids), bool, count=len(ids))
    return BankView(ids, texts, minilm, clip, hidden)


def knn_candidates(bank: BankView, image_embeddings: np.ndarray, k_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k_max visible bank prompts per image: indices (n, k) and Euclidean distances (n, k)."""
    return matrix_neighbours(image_embeddings, bank.clip, k_max, bank.hidden)


def model_b_predictions(bank: BankView, indices: np.ndarray, distances: np.ndarray, params: KnnParams) -> np.ndarray:
    k = min(params.k, indices.shape[1])
    return predict(distances[:, :k], bank.minilm[indices[:, :k]], params).astype(np.float32)


def avg_cos(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Eq. 8: the mean cosine between predictions and ground-truth embeddings."""
    if len(targets) == 0:
        return float("nan")
    p = predictions / np.maximum(np.linalg.norm(predictions, axis=1, keepdims=True), 1e-12)
    t = targets / np.maximum(np.linalg.norm(targets, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.sum(p * t, axis=1)))


def tune_knn(bank: BankView, indices: np.ndarray, distances: np.ndarray, targets: np.ndarray) -> tuple[KnnParams, float, list[dict]]:
    """Grid search of K and Distance_Dim on validation; returns the best params, their score and the sweep."""
    sweep = []
    best, best_score = KnnParams(), -math.inf
    for k in K_GRID:
        if k > indices.shape[1] and k != K_GRID[0]:
            continue
        for dd in DISTANCE_DIM_GRID:
            params = KnnParams(k=k, distance_dim=dd)
            score = avg_cos(model_b_predictions(bank, indices, distances, params), targets)
            sweep.append({"k": k, "distance_dim": dd, "avg_cos": score})
            if score > best_score + 1e-9:
                best, best_score = params, score
    return best, best_score, sweep


def blend(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """Eq. 6 on unit-length parts: alpha * A + (1 - alpha) * B, L2-normalised."""
    mixed = alpha * a + (1.0 - alpha) * b
    return mixed / np.maximum(np.linalg.norm(mixed, axis=-1, keepdims=True), 1e-12)


def tune_alpha(a: np.ndarray, b: np.ndarray, targets: np.ndarray) -> tuple[float, float, list[dict]]:
    sweep = [{"alpha": alpha, "avg_cos": avg_cos(blend(a, b, alpha), targets)} for alpha in ALPHA_GRID]
    best = max(sweep, key=lambda row: (row["avg_cos"], -abs(row["alpha"] - 0.5)))
    return best["alpha"], best["avg_cos"], sweep


# --- the whole command ----------------------------------------------------------------------------------------


def train_head(store: "StoreContext", options: TrainOptions, progress: Progress | None = None) -> TrainReport:
    """Train Model A on the store's pairs, tune Model B and alpha, save the head; see the module docstring."""
    from clipstore.describe.model_a import predict_from_embeddings

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
    work = os.path.join(heads_folder(store.path), f".training-{key}")
    os.makedirs(work, exist_ok=True)
    checkpoint = os.path.join(work, "checkpoint.pt")

    if options.freeze_vision:
        views = options.views if options.augment else 0
        inputs = augmented_embeddings(store, train, views, options.seed, report)
        model, loop, stopped = fit_frozen_head(
            inputs, train_targets, validation.embeddings, val_targets, options,
            target_variants=np.ascontiguousarray(variants), checkpoint=checkpoint, progress=report,
        )
        val_a = predict_from_embeddings(model, validation.embeddings)
    else:
        model, loop, stopped = fit_tuned_tower(
            store, train, np.ascontiguousarray(variants), validation, val_targets, options,
            checkpoint=checkpoint, progress=report,
        )
        val_a = _tower_predictions(store, model, validation)

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
    folder = _save(store, model, config)
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


def _tower_predictions(store: "StoreContext", model, pairs: Pairs) -> np.ndarray:
    import torch

    from clipstore.describe.model_a import predict_from_embeddings, predict_from_pixels

    out = predict_from_embeddings(model, pairs.embeddings)  # fallback for unreadable files
    rows, pixels = [], []
    for i in range(len(pairs)):
        image = load_training_image(pairs.paths[i], min_side=store.model.decode_min_side, max_side=int(store.model.image_size * 1.3))
        if image is not None:
            rows.append(i)
            pixels.append(store.encoder.preprocess(image))
    if rows:
        out[rows] = predict_from_pixels(model, torch.stack(pixels))
    return out


def _save(store: "StoreContext", model, config: HeadConfig) -> str:
    from clipstore.describe.model_a import save_weights

    final = os.path.join(heads_folder(store.path), config.id)
    with saved_folder(final) as folder:
        save_weights(model, folder)
        with open(os.path.join(folder, layout.CONFIG_FILE), "w", encoding="utf-8") as handle:
            handle.write(config.to_json())
    from clipstore.db.locking import write_lock

    with write_lock(store.path):
        record_head(store.db, store.path, config, final)
    return final


def _parameter_groups(model, options: TrainOptions) -> list[dict]:
    """AdamW groups of seed 001's differential learning rates: the head at `lr_fc`, the tower at `lr_vision`."""
    groups = [{"params": model.head_parameters(), "lr": options.lr_fc}]
    if model.vision_parameters():
        groups.append({"params": model.vision_parameters(), "lr": options.lr_vision})
    return groups


def _run_key(store: "StoreContext", options: TrainOptions, train: Pairs, validation: Pairs) -> str:
    """Identifies a training run: same store model, options and data -> same key -> its checkpoint resumes."""
    return run_key(store.model, store.path, options.to_dict(), ["\n".join(train.ids), "\n".join(validation.ids)])
