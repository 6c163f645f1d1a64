"""`clipstore eval`: Avg-Cos (seed 001 eq. 8) on held-out (image, prompt) pairs, in the layout of its Table 1.

Rows (each the mean cosine between a prediction and all-MiniLM-L6-v2(true prompt), over the same pairs):

    CLIP zero-shot            the MiniLM embedding of the bank prompt with the highest CLIP similarity
    Model A, no data filter   \
    Model A, filter 0.85       } head-only Model A retrained on the store's training pairs, their prompts
    Model A, filter 0.75      /  de-duplicated at that threshold first (the seed's data-filter ablation)
    Model A                   the newest trained head (`clipstore train`)
    Model B                   weighted KNN fusion (the head's tuned K / Distance_Dim, or the defaults)
    Ensemble                  eq. 6 with the head's alpha

Held-out pairs are the store's test split (never trained on) unless others are given. Their prompts are hidden
from the bank while evaluating, so no method can simply look the answer up. The head is the one `describe`
would use (`heads.choose_head`); Avg-Cos and the blend are `ensemble`'s.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from clipstore.describe.ensemble import avg_cos, blend
from clipstore.describe.heads import choose_head, load_head_model
from clipstore.describe.model_b import KnnParams, bank_view, choose_untuned_knn, knn_candidates, model_b_predictions
from clipstore.describe.pairs import Pairs, load_pairs
from clipstore.describe.train import TrainOptions, dedup_mask, minilm_targets, split_for_training
from clipstore.errors import ClipstoreError, TrainingDataError as EvaluationDataError
from clipstore.progress import Progress, silent
from clipstore.results import _AsDict

if TYPE_CHECKING:
    from clipstore.db.context import StoreContext

DEFAULT_ABLATION = (None, 0.85, 0.75)


@dataclass(frozen=True)
class EvalRow(_AsDict):
    name: str
    avg_cos: float
    n: int


@dataclass(frozen=True)
class EvalReport(_AsDict):
    """The Table-1 rows, the pairs they were measured on, and what was used (head, K, alpha)."""

    rows: tuple[EvalRow, ...]
    pairs: str
    head: str | None
    knn: dict
    alpha: float | None
    notes: tuple[str, ...] = field(default_factory=tuple)


def external_pairs(store: "StoreContext", records: Sequence[tuple[str, str]], progress=None) -> Pairs:
    """(path, prompt) pairs that need not be in the store: their images are embedded with the store's model."""
    from clipstore.imaging import load_image

    ids, prompts, paths, vectors = [], [], [], []
    encoder = store.encoder
    for done, (path, prompt) in enumerate(records, start=1):
        try:
            image = load_image(path, min_side=store.model.decode_min_side).image
        except (ClipstoreError, OSError):
            continue
        with open(path, "rb") as handle:  # the store's id of these bytes: never train the ablation on them
            ids.append(hashlib.sha256(handle.read()).hexdigest())
        prompts.append(prompt.strip())
        paths.append(os.path.abspath(path))
        vectors.append(encoder.encode_images([image])[0])
        if progress:
            progress("embed", done, len(records))
    if not ids:
        raise EvaluationDataError("None of the given evaluation images could be read.")
    return Pairs(tuple(ids), tuple(prompts), tuple(paths), np.stack(vectors).astype(np.float32), ("test",) * len(ids))


def evaluate(
    store: "StoreContext",
    *,
    pairs: Pairs | None = None,
    head: str | os.PathLike[str] | None = None,
    ablation: Sequence[float | None] = DEFAULT_ABLATION,
    progress: Progress | None = None,
) -> EvalReport:
    """Evaluate every method on held-out pairs (default: the store's test split); see the module docstring."""
    from clipstore.describe.model_a import fit_frozen_head, predict_from_embeddings, predict_pairs

    report = progress or silent
    stored = load_pairs(store.db)
    held_out = pairs if pairs is not None else stored.split("test")
    label = "given pairs" if pairs is not None else "store test split"
    if len(held_out) == 0:
        raise EvaluationDataError(
            "No held-out pairs: the store's test split (about 10% of the images that carry a prompt) is empty. "
            "Ingest more images with prompts, or pass evaluation pairs (--pairs manifest.jsonl)."
        )
    targets = minilm_targets(store, list(held_out.prompts))
    notes: list[str] = []
    rows: list[EvalRow] = []
    n = len(held_out)

    chosen = choose_head(store, head)
    config, folder = chosen.config, chosen.folder
    if config is None:
        notes.append("No trained Model A for the store's encoder: the Model A and Ensemble rows are missing (run `clipstore train`).")
    knn = config.knn if config else KnnParams()

    # The bank, with the held-out answers hidden; plus the validation/test prompts when the pairs are the store's.
    hide = list(held_out.prompts)
    bank = bank_view(store, hide)
    if config is None:
        # Without a head, Model B's row uses describe's rule (`choose_untuned_knn`) on the pairs not evaluated.
        held_ids = set(held_out.ids)
        tuning = stored.subset([i for i, image_id in enumerate(stored.ids) if image_id not in held_ids])
        knn, choice = choose_untuned_knn(bank, tuning.embeddings, minilm_targets(store, list(tuning.prompts)))
        notes.append(f"Model B K = {knn.k}, Distance_Dim = {knn.distance_dim:g}: {choice.why}")
    b = None
    if bank.visible:
        indices, distances = knn_candidates(bank, held_out.embeddings, max(knn.k, 1))
        rows.append(EvalRow("CLIP zero-shot (nearest bank prompt)", avg_cos(bank.minilm[indices[:, 0]], targets), n))
        b = model_b_predictions(bank, indices, distances, knn)
    else:
        notes.append("The prompt bank is empty (after hiding the held-out prompts): no zero-shot or Model B rows.")

    # The data-filter ablation: head-only Model A retrained per threshold on the training split.
    train_pairs, validation = split_for_training(stored)
    train_pairs = train_pairs.subset([i for i, pid in enumerate(train_pairs.ids) if pid not in set(held_out.ids)])
    if len(train_pairs) >= 2:
        base = TrainOptions(freeze_vision=True, augment=False, views=0, epochs=40, patience=6)
        if config is not None:
            hyper = {k: v for k, v in config.hyper_parameters.items() if k in TrainOptions.__dataclass_fields__}
            base = replace(base, **{k: hyper[k] for k in ("lr_fc", "weight_decay", "mix", "dropout", "batch_size", "seed") if k in hyper})
        train_targets = minilm_targets(store, list(train_pairs.prompts))
        val_targets = minilm_targets(store, list(validation.prompts))
        for step, threshold in enumerate(ablation, start=1):
            keep = dedup_mask(train_targets, threshold)
            model, _, _ = fit_frozen_head(
                train_pairs.embeddings[keep][:, None, :], train_targets[keep], validation.embeddings, val_targets,
                replace(base, dedup_threshold=threshold),
            )
            name = "Model A, no data filter" if threshold is None else f"Model A, filter {threshold:g}"
            rows.append(EvalRow(f"{name} (head only, {int(keep.sum())} pairs)", avg_cos(predict_from_embeddings(model, held_out.embeddings), targets), n))
            report("ablation", step, len(ablation))

    if config is not None:
        a = predict_pairs(store, load_head_model(store, folder, config), held_out)
        rows.append(EvalRow("Model A", avg_cos(a, targets), n))
    if b is not None:
        rows.append(EvalRow(f"Model B (K={knn.k}, Distance_Dim={knn.distance_dim:g})", avg_cos(b, targets), n))
    if config is not None and b is not None:
        rows.append(EvalRow(f"Ensemble (alpha={config.ensemble_alpha:g})", avg_cos(blend(a, b, config.ensemble_alpha), targets), n))
    return EvalReport(
        tuple(EvalRow(r.name, round(r.avg_cos, 6), r.n) for r in rows),
        label,
        config.id if config else None,
        knn.to_dict(),
        config.ensemble_alpha if config else None,
        tuple(notes),
    )
