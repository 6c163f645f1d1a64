"""The ensemble of Model A and Model B (seed 001 eq. 6) and the score everything in describe is tuned by (eq. 8).

    Ens     = alpha * A + (1 - alpha) * B          (6)   A, B and Ens unit length
    Avg-Cos = mean_i cos(prediction_i, MiniLM(true prompt_i))   (8)

`clipstore train` picks alpha on the validation split from `ALPHA_GRID` (`tune_alpha`); `Describer` blends with
it at query time, `clipstore eval` reports the ensemble's Avg-Cos. Eq. 8 lives here, below Model A, Model B and
the ensemble, because each of them is tuned by it (Model B's K / Distance_Dim grid, alpha, early stopping).
"""

from __future__ import annotations

import numpy as np

ALPHA_GRID = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 21))


def avg_cos(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Eq. 8: the mean cosine between predictions (n, d) and ground-truth embeddings (n, d); NaN when n = 0."""
    if len(targets) == 0:
        return float("nan")
    p = predictions / np.maximum(np.linalg.norm(predictions, axis=1, keepdims=True), 1e-12)
    t = targets / np.maximum(np.linalg.norm(targets, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.sum(p * t, axis=1)))


def blend(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """Eq. 6 on unit-length parts (d,) or (n, d): alpha * A + (1 - alpha) * B, L2-normalised (rows)."""
    mixed = alpha * a + (1.0 - alpha) * b
    # One vector's norm the way numpy computes it for a vector (a dot product), rows' by a reduction: the two
    # round differently in the last bit, and describe's printed embeddings must not change.
    norms = np.linalg.norm(mixed) if mixed.ndim == 1 else np.linalg.norm(mixed, axis=-1, keepdims=True)
    return mixed / np.maximum(norms, 1e-12)


def tune_alpha(a: np.ndarray, b: np.ndarray, targets: np.ndarray) -> tuple[float, float, list[dict]]:
    """The alpha of `ALPHA_GRID` whose blend of A (n, d) and B (n, d) scores best against targets (n, d).

    Returns (alpha, its Avg-Cos, the sweep [{alpha, avg_cos}]); ties go to the alpha nearest 0.5.
    """
    sweep = [{"alpha": alpha, "avg_cos": avg_cos(blend(a, b, alpha), targets)} for alpha in ALPHA_GRID]
    best = max(sweep, key=lambda row: (row["avg_cos"], -abs(row["alpha"] - 0.5)))
    return best["alpha"], best["avg_cos"], sweep
