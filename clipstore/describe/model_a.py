"""Model A (seed 001 eq. 1-3): the CLIP vision tower refined by FC1 -> Norm1 -> FC2 -> Norm2.

    FC1_Out   = FC1(Image_Emb)                                   (1)
    Norm1_Out = Norm1(FC1_Out)                                   (2)
    Norm2_Out = Norm2(FC2(GELU(Norm1_Out)))
    Out       = mix * Norm1_Out + (1 - mix) * Norm2_Out          (3)

Image_Emb is the tower's L2-normalised CLIP image embedding (scaled by sqrt(dim) so the first layer sees unit
variance); the output lives in all-MiniLM-L6-v2's 384-d space, where the loss is 1 - cosine to MiniLM(prompt).
The GELU between Norm1 and FC2 keeps the two layers from collapsing into one linear map. Without a vision tower
(a head trained with --freeze-vision) the head reads the store's own image embeddings.

Everything about the network is here: `ModelA`, its two training fits (`fit_frozen_head` on stored/augmented
CLIP embeddings, `fit_tuned_tower` on images, the tower trained too, both with seed 001's differential learning
rates), its predictions (`predict_from_embeddings`, `predict_from_pixels`, `predict_pairs`) and its weights
file (`save_weights`, `load_weights`). Saved heads (config + records) are `clipstore.describe.heads`.

This module imports torch; the rest of clipstore imports it lazily.
"""

from __future__ import annotations

import math
import os
import random
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipstore.db.layout import HEAD_WEIGHTS_FILE
from clipstore.encoders.minilm import MINILM_DIM
from clipstore.errors import TrainingDataError
from clipstore.progress import Progress, silent
from clipstore.training.images import load_training_image
from clipstore.training.loop import TrainingLoop

if TYPE_CHECKING:
    from clipstore.db.context import StoreContext
    from clipstore.describe.pairs import Pairs


class FitOptions(Protocol):
    """The hyper-parameters the fits read; `clipstore.describe.train.TrainOptions` carries them (and more)."""

    epochs: int
    batch_size: int
    lr_vision: float
    lr_fc: float
    weight_decay: float
    warmup_fraction: float
    patience: int
    mix: float
    dropout: float
    augment: bool
    seed: int


class ModelA(nn.Module):
    def __init__(self, in_dim: int, out_dim: int = 384, mix: float = 0.5, dropout: float = 0.1, visual: nn.Module | None = None):
        super().__init__()
        self.in_dim = in_dim
        self.mix = float(mix)
        self.visual = visual
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.norm1 = nn.LayerNorm(out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)
        self.norm2 = nn.LayerNorm(out_dim)

    def head(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """Eq. 1-3 on CLIP image embeddings (n, in_dim) of any norm."""
        x = F.normalize(image_embedding.float(), dim=-1) * math.sqrt(self.in_dim)
        norm1 = self.norm1(self.fc1(self.dropout(x)))
        norm2 = self.norm2(self.fc2(F.gelu(norm1)))
        return self.mix * norm1 + (1.0 - self.mix) * norm2

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (n, 3, H, W) through the vision tower and the head."""
        if self.visual is None:
            raise ValueError("this Model A has no vision tower; call head() with CLIP image embeddings")
        return self.head(self.visual(pixels))

    def vision_parameters(self) -> list[nn.Parameter]:
        return list(self.visual.parameters()) if self.visual is not None else []

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("visual.")]


def cosine_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(prediction, target)."""
    return (1.0 - F.cosine_similarity(prediction, target, dim=-1)).mean()


def save_weights(model: ModelA, folder: str) -> None:
    """Write the model's weights (fp32, safetensors) into `folder` as `model_a.safetensors`."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().float().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(state, os.path.join(folder, HEAD_WEIGHTS_FILE))


def load_weights(path: str, *, in_dim: int, out_dim: int, mix: float, visual: nn.Module | None = None) -> ModelA:
    """Rebuild a saved Model A from its weights file (`model_a.safetensors`, a local path) in eval mode (give
    `visual`, a fresh tower of the base architecture, when the tower was fine-tuned with it)."""
    from safetensors.torch import load_file

    model = ModelA(in_dim, out_dim, mix, 0.0, visual)
    model.load_state_dict(load_file(path))
    return model.eval().requires_grad_(False)


@torch.inference_mode()
def predict_from_embeddings(model: ModelA, embeddings: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Model A's unit-length predictions (n, 384) from stored CLIP image embeddings (frozen-tower heads)."""
    model.eval()
    out = [model.head(torch.from_numpy(np.ascontiguousarray(embeddings[i : i + batch_size], np.float32))) for i in range(0, len(embeddings), batch_size)]
    if not out:
        return np.zeros((0, model.fc1.out_features), np.float32)
    return F.normalize(torch.cat(out), dim=-1).numpy()


@torch.inference_mode()
def predict_from_pixels(model: ModelA, pixels: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Model A's unit-length predictions (n, 384) from preprocessed images (heads with a tuned tower)."""
    model.eval()
    dtype = next(model.visual.parameters()).dtype if model.visual is not None else torch.float32
    out = [model(pixels[i : i + batch_size].to(dtype)) for i in range(0, len(pixels), batch_size)]
    if not out:
        return np.zeros((0, model.fc1.out_features), np.float32)
    return F.normalize(torch.cat(out).float(), dim=-1).numpy()


def predict_pairs(store: "StoreContext", model: ModelA, pairs: "Pairs") -> np.ndarray:
    """Model A's unit predictions (n, 384) for pairs: from the stored embeddings for a frozen-tower head, from the
    image files for a tuned tower (the stored embedding where a file cannot be read)."""
    out = predict_from_embeddings(model, pairs.embeddings)
    if model.visual is None:
        return out
    rows, pixels = [], []
    for i in range(len(pairs)):
        image = load_training_image(pairs.paths[i], min_side=store.model.decode_min_side, max_side=int(store.model.image_size * 1.3))
        if image is not None:
            rows.append(i)
            pixels.append(store.encoder.preprocess(image))
    if rows:
        out[rows] = predict_from_pixels(model, torch.stack(pixels))
    return out


def parameter_groups(model: ModelA, options: FitOptions) -> list[dict]:
    """AdamW groups of seed 001's differential learning rates: the head at `lr_fc`, the tower at `lr_vision`."""
    groups = [{"params": model.head_parameters(), "lr": options.lr_fc}]
    if model.vision_parameters():
        groups.append({"params": model.vision_parameters(), "lr": options.lr_vision})
    return groups


def fit_frozen_head(
    inputs: np.ndarray,
    targets: np.ndarray,
    val_inputs: np.ndarray,
    val_targets: np.ndarray,
    options: FitOptions,
    *,
    target_variants: np.ndarray | None = None,
    checkpoint: str | None = None,
    progress: Progress | None = None,
):
    """Train a head on CLIP embeddings: inputs (n, V, d) views per image, targets (n, 384) or variants (n, T, 384).

    Returns (model, loop, stopped early?). Deterministic for a given seed; resumes from `checkpoint` when it exists.
    """
    torch.manual_seed(options.seed)
    n, views, dim = inputs.shape
    model = ModelA(dim, targets.shape[1], options.mix, options.dropout)
    steps = math.ceil(n / options.batch_size)
    loop = TrainingLoop(model, options, steps, checkpoint, parameter_groups(model, options))
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
    options: FitOptions,
    *,
    checkpoint: str | None,
    progress: Progress,
):
    """Train the vision tower (an fp32 copy of the store's encoder) and the head together on augmented images
    (pixels decoded once, kept small); targets_variants (n, T, 384), val_targets (m, 384).

    Returns (model, loop, stopped early?); validation rows whose file cannot be read are scored from their stored
    embedding. Raises TrainingDataError when fewer than 2 training images can be read.
    """
    from clipstore.encoders.clip import vision_tower
    from clipstore.training.augment import image_augmenter, mentions_sides

    identity = store.model
    torch.manual_seed(options.seed)
    visual = vision_tower(store.loadable(identity))
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
    loop = TrainingLoop(model, options, steps, checkpoint, parameter_groups(model, options))
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
