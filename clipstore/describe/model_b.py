"""Model B: weighted KNN fusion over the prompt bank (seed 001 eq. 4-5, seed 002's online stage).

For a query image's CLIP embedding, the K bank prompts with the nearest CLIP text embeddings are retrieved;
each neighbour i gets the weight of eq. 4,

    Weight(i) = Coef / Distance(i) ** (Distance_Dim + delta)

where Distance(i) is the Euclidean distance between the L2-normalised image and text embeddings
(sqrt(2 - 2 cos)); the prediction is eq. 5, the weighted mean of the neighbours' all-MiniLM-L6-v2 embeddings,

    Text_Emb = 1/K * sum_i Weight(i) * KNN_Text_Emb(i).

Eq. 5's scale carries no meaning for a cosine metric; `predict` returns it L2-normalised so that it can be
blended with Model A by eq. 6. A distance of exactly 0 is clamped to `MIN_DISTANCE` (the image *is* that text).
Defaults were chosen on the render world's validation split (benchmarks/describe_eval.py, BENCHMARKS.md).

Neighbours are found two ways: `bank_neighbours` asks LanceDB (one image at query time, `Describer`; through the
bank's vector index once the bank has reached the store's index threshold);
`BankView` + `knn_candidates` hold the bank in memory for many images at once, with the held-out prompts hidden
(training, evaluation, fine-tuning's pseudo-captions). `tune_knn` picks K and Distance_Dim on validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from clipstore.db import tables
from clipstore.describe.ensemble import avg_cos
from clipstore.encoders.minilm import MINILM_DIM
from clipstore.errors import InvalidOptionError
from clipstore.prompts.bank import load_bank, prompt_id
from clipstore.prompts.nearest import CLIP_COLUMN, MINILM_COLUMN, nearest_rows
from clipstore.results import _AsDict

if TYPE_CHECKING:
    import lancedb

    from clipstore.db.context import StoreContext

MIN_DISTANCE = 1e-6
K_GRID = (1, 2, 3, 5, 10, 20, 50, 100)
DISTANCE_DIM_GRID = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


@dataclass(frozen=True)
class KnnParams(_AsDict):
    """Model B's parameters: K neighbours, Distance_Dim and delta (the exponent of eq. 4), Coef (its scale)."""

    k: int = 20
    distance_dim: float = 2.0
    delta: float = 1e-3
    coef: float = 1.0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InvalidOptionError(f"k must be at least 1, not {self.k}")
        if self.coef <= 0:
            raise InvalidOptionError(f"coef must be positive, not {self.coef}")

    def with_k(self, k: int | None) -> "KnnParams":
        return self if k is None else replace(self, k=int(k))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "KnnParams":
        return cls(int(data["k"]), float(data["distance_dim"]), float(data["delta"]), float(data["coef"]))


def knn_weights(distances: np.ndarray, params: KnnParams) -> np.ndarray:
    """Eq. 4 for each distance (any shape): Coef / Distance ** (Distance_Dim + delta)."""
    distances = np.maximum(np.asarray(distances, dtype=np.float64), MIN_DISTANCE)
    return params.coef / distances ** (params.distance_dim + params.delta)


def fuse(distances: np.ndarray, neighbour_embeddings: np.ndarray, params: KnnParams) -> np.ndarray:
    """Eq. 5: (1/K) * sum_i Weight(i) * embedding_i, for distances (K,) and embeddings (K, D); not normalised.

    Batched: distances (n, K) and embeddings (n, K, D) give (n, D).
    """
    distances = np.asarray(distances, dtype=np.float64)
    embeddings = np.asarray(neighbour_embeddings, dtype=np.float64)
    k = distances.shape[-1]
    if k == 0:
        return np.zeros(embeddings.shape[:-2] + embeddings.shape[-1:], dtype=np.float64)
    return (knn_weights(distances, params)[..., None] * embeddings).sum(axis=-2) / k


def predict(distances: np.ndarray, neighbour_embeddings: np.ndarray, params: KnnParams) -> np.ndarray:
    """Model B's prediction: eq. 5, L2-normalised (rows, when batched).

    Computed with weights relative to the nearest neighbour's, which gives eq. 5's direction exactly without
    overflowing at large exponents (the job eq. 4's Coef does in the seed).
    """
    distances = np.asarray(distances, dtype=np.float64)
    embeddings = np.asarray(neighbour_embeddings, dtype=np.float64)
    nearest = np.maximum(distances.min(axis=-1, keepdims=True), MIN_DISTANCE) if distances.shape[-1] else 1.0
    relative = (nearest / np.maximum(distances, MIN_DISTANCE)) ** (params.distance_dim + params.delta)
    return _unit((relative[..., None] * embeddings).sum(axis=-2))


def euclidean(cosines: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit vectors from their cosine: sqrt(2 - 2 cos)."""
    return np.sqrt(np.maximum(2.0 - 2.0 * np.asarray(cosines, dtype=np.float64), 0.0))


@dataclass(frozen=True)
class Neighbours:
    """The K retrieved bank prompts: ids, texts, Euclidean distances (K,) and MiniLM embeddings (K, 384)."""

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    distances: np.ndarray
    minilm: np.ndarray


def bank_neighbours(db: "lancedb.DBConnection", image_embedding: np.ndarray, k: int) -> Neighbours:
    """The k bank prompts whose CLIP text embeddings are nearest the (unit) image embedding, via LanceDB.

    An exact scan of `clip_embedding` below the store's index threshold, its vector index from there on
    (`clipstore.prompts.nearest`); the distances used for eq. 4 are recomputed exactly from the returned
    embeddings.
    """
    table = tables.open_prompts(db)
    query = _unit(np.asarray(image_embedding, dtype=np.float32).reshape(-1)).astype(np.float32)
    rows = nearest_rows(table, CLIP_COLUMN, query, k, ["id", "text", CLIP_COLUMN, MINILM_COLUMN])
    if rows.num_rows == 0:
        return Neighbours((), (), np.zeros(0), np.zeros((0, MINILM_DIM), np.float32))
    clip = tables.vector_matrix(rows.column(CLIP_COLUMN))
    minilm = tables.vector_matrix(rows.column(MINILM_COLUMN))
    distances = euclidean(_unit(clip) @ query)
    order = np.argsort(distances, kind="stable")
    return Neighbours(
        tuple(rows.column("id").to_pylist()[i] for i in order),
        tuple(rows.column("text").to_pylist()[i] for i in order),
        distances[order],
        minilm[order],
    )


def predict_for_image(
    db: "lancedb.DBConnection", image_embedding: np.ndarray, params: KnnParams, *, bank: bool = True,
    images: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray | None:
    """Model B for one unit CLIP image embedding (d,): a unit (384,) prediction, or None when nothing was found.

    Eq. 5 over its `params.k` nearest bank prompts (via LanceDB, when `bank`), summed with eq. 5 over the prompts
    of its k nearest stored images when `images` = (their CLIP embeddings (m, d), their prompts' MiniLM
    embeddings (m, 384)) is given (image->image distance, same weights).
    """
    parts = []
    if bank:
        found = bank_neighbours(db, image_embedding, params.k)
        if len(found.ids):
            parts.append(predict(found.distances, found.minilm, params))
    if images is not None and len(images[0]):
        embeddings, minilm = images
        scores = embeddings @ image_embedding
        top = np.argsort(-scores, kind="stable")[: min(params.k, len(scores))]
        parts.append(predict(euclidean(scores[top]), minilm[top], params).astype(np.float32))
    if not parts:
        return None
    mixed = np.sum(parts, axis=0)
    return (mixed / max(np.linalg.norm(mixed), 1e-12)).astype(np.float32)


def matrix_neighbours(queries: np.ndarray, keys: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by Euclidean distance of unit vectors, in memory: (indices (n, k), distances (n, k)).

    Used by training and evaluation to retrieve for many images at once; `exclude` (len(keys),) bool masks
    keys out (e.g. the held-out prompts, so evaluation never finds the answer in the bank).
    """
    scores = _unit(np.asarray(queries, np.float32)) @ _unit(np.asarray(keys, np.float32)).T
    if exclude is not None and exclude.any():
        scores[:, exclude] = -np.inf
    k = min(k, int(len(keys) - (exclude.sum() if exclude is not None else 0)))
    if k <= 0:
        return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0))
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return top, euclidean(np.take_along_axis(scores, top, axis=1))


@dataclass(frozen=True)
class BankView:
    """The bank as matrices: ids, texts, MiniLM (n, 384) and CLIP text (n, d) embeddings, and `hidden` (n,) bool,
    the prompts that must not be found (held-out answers)."""

    ids: list[str]
    texts: list[str]
    minilm: np.ndarray
    clip: np.ndarray
    hidden: np.ndarray

    @property
    def visible(self) -> int:
        """How many prompts can be found."""
        return int(len(self.ids) - self.hidden.sum())


def bank_view(store: "StoreContext", hide_prompts: list[str]) -> BankView:
    """The store's whole bank in memory, with the prompts whose text is in `hide_prompts` hidden."""
    ids, texts, minilm, clip = load_bank(store.db, with_clip=True)
    hidden_ids = {prompt_id(text) for text in hide_prompts}
    hidden = np.fromiter((i in hidden_ids for i in ids), bool, count=len(ids))
    return BankView(ids, texts, minilm, clip, hidden)


def knn_candidates(bank: BankView, image_embeddings: np.ndarray, k_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k_max visible bank prompts per image (n, d): indices (n, k) and Euclidean distances (n, k)."""
    return matrix_neighbours(image_embeddings, bank.clip, k_max, bank.hidden)


def model_b_predictions(bank: BankView, indices: np.ndarray, distances: np.ndarray, params: KnnParams) -> np.ndarray:
    """Model B's unit predictions (n, 384) from `knn_candidates`, using the first `params.k` of them."""
    k = min(params.k, indices.shape[1])
    return predict(distances[:, :k], bank.minilm[indices[:, :k]], params).astype(np.float32)


def tune_knn(bank: BankView, indices: np.ndarray, distances: np.ndarray, targets: np.ndarray) -> tuple[KnnParams, float, list[dict]]:
    """Grid search of K (`K_GRID`) and Distance_Dim (`DISTANCE_DIM_GRID`) by Avg-Cos against targets (n, 384).

    `indices` / `distances` are `knn_candidates` for max(K_GRID). Returns the best params, their score and the
    sweep [{k, distance_dim, avg_cos}].
    """
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


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


# --- Model B without a trained head ------------------------------------------------------------------------------

UNTUNED_MIN_PAIRS = 10
"""Fewest stored image-prompt pairs worth tuning Model B on when the store has no trained head."""
UNTUNED_MAX_PAIRS = 2000
"""Most pairs used for that tuning (an even sample by image id; the work grows with pairs x bank)."""
UNTUNED_MAX_BANK = 50_000
"""Largest bank that tuning reads into memory (the store's default index threshold): past it, a store without a
head keeps the defaults, which were tuned on a large bank, instead of reading the whole bank at every start."""
_SAME_PROMPT = 1.0 - 1e-4


@dataclass(frozen=True)
class KnnChoice(_AsDict):
    """Why Model B uses the parameters it uses.

    rule: "head" (tuned by `clipstore train` on the head's validation split), "head-below-zero-shot" (the newest
        head's ensemble did not beat the zero-shot nearest prompt on its validation split: it is not used, K = 1),
        "store-pairs" (no usable head:
        tuned on the store's own image-prompt pairs against the bank as describe sees it, and kept only where it
        beats the nearest prompt), "nearest-prompt" (no usable head and too few pairs: K = 1, the zero-shot
        answer), "defaults" (no usable head and a bank larger than `UNTUNED_MAX_BANK`: the defaults, tuned on a
        large bank) or "option" (the caller's k).
    why: one sentence for people. pairs: how many pairs were scored (0 when none).
    avg_cos / top1: the chosen parameters' Avg-Cos and top-1 share on those pairs; nearest_avg_cos /
        nearest_top1: the same for K = 1 (NaN when not measured).
    """

    rule: str
    why: str
    pairs: int = 0
    avg_cos: float = float("nan")
    top1: float = float("nan")
    nearest_avg_cos: float = float("nan")
    nearest_top1: float = float("nan")


def top1_hits(bank: BankView, predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per prediction (n, 384): whether its nearest bank prompt (MiniLM cosine) is the target (n, 384)."""
    if len(targets) == 0:
        return np.zeros(0, bool)
    best = np.argmax(_unit(predictions) @ _unit(bank.minilm).T, axis=1)
    return np.sum(_unit(bank.minilm[best]) * _unit(targets), axis=1) >= _SAME_PROMPT


def top1_share(bank: BankView, predictions: np.ndarray, targets: np.ndarray) -> float:
    """The share of predictions (n, 384) whose nearest bank prompt (MiniLM cosine) is the target (n, 384)."""
    if len(targets) == 0:
        return float("nan")
    return float(np.mean(top1_hits(bank, predictions, targets)))


def choose_untuned_knn(bank: BankView, image_embeddings: np.ndarray, targets: np.ndarray) -> tuple[KnnParams, KnnChoice]:
    """Model B's K / Distance_Dim for a store with no trained head (issue #16: never below zero-shot).

    The defaults (K = 20) were tuned on the render world's large bank with each answer hidden; on a small bank
    whose prompts are the answers, averaging 20 neighbours blurs every image into the bank's mean. So: with at
    least `UNTUNED_MIN_PAIRS` stored pairs (CLIP image embeddings (n, d), their prompts' MiniLM (n, 384)), the
    grid of `tune_knn` is scored on them against the whole bank, and a K > 1 is kept only when it beats K = 1
    (the nearest prompt in CLIP space, the zero-shot answer) on Avg-Cos without turning a single pair that K = 1
    names right into a miss; otherwise, and with fewer pairs, K = 1. (A K > 1 that trades some of the nearest
    prompt's right answers for as many new ones ties on the pairs' top-1, but the trade does not carry over to
    new images: the answers it takes away are lost there too, the ones it adds mostly are not.)
    """
    nearest = KnnParams(k=1, distance_dim=KnnParams().distance_dim)
    n = len(targets)
    if n < UNTUNED_MIN_PAIRS or bank.visible == 0:
        why = (
            f"No trained Model A and {'only ' + str(n) if n else 'no'} stored image-prompt pair{'s' if n != 1 else ''} "
            f"to tune Model B on (at least {UNTUNED_MIN_PAIRS} needed): K = 1, the bank prompt nearest the image in "
            "CLIP space (the zero-shot answer)."
        )
        return nearest, KnnChoice("nearest-prompt", why, n)
    if n > UNTUNED_MAX_PAIRS:
        keep = np.linspace(0, n - 1, UNTUNED_MAX_PAIRS).round().astype(int)
        image_embeddings, targets, n = image_embeddings[keep], targets[keep], UNTUNED_MAX_PAIRS
    indices, distances = knn_candidates(bank, image_embeddings, max(K_GRID))
    scored = []
    for k in K_GRID:
        if k > indices.shape[1] and k != K_GRID[0]:
            continue
        for dd in DISTANCE_DIM_GRID if k > 1 else (nearest.distance_dim,):
            params = KnnParams(k=k, distance_dim=dd)
            predictions = model_b_predictions(bank, indices, distances, params)
            scored.append((params, avg_cos(predictions, targets), top1_hits(bank, predictions, targets)))
    _, base_cos, base_hits = scored[0]
    best, best_cos, best_hits = scored[0]
    for params, score, hits in scored[1:]:
        if score > best_cos + 1e-6 and not np.any(base_hits & ~hits):
            best, best_cos, best_hits = params, score, hits
    base_top1, best_top1 = float(np.mean(base_hits)), float(np.mean(best_hits))
    if best.k == 1:
        why = (
            f"No trained Model A: tuned on the store's {n} image-prompt pairs, where no K > 1 beat the nearest "
            f"prompt (K = 1, Avg-Cos {base_cos:.4f}, top-1 {base_top1:.1%}) without taking away one of its right answers."
        )
    else:
        why = (
            f"No trained Model A: K and Distance_Dim tuned on the store's {n} image-prompt pairs (Avg-Cos "
            f"{best_cos:.4f}, top-1 {best_top1:.1%}, against {base_cos:.4f} and {base_top1:.1%} for the nearest prompt, all of whose "
            "right answers it keeps)."
        )
    return best, KnnChoice("store-pairs", why, n, best_cos, best_top1, base_cos, base_top1)
