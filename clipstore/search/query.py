"""Combined queries: a text, an image and negative texts blended into one query vector (`Store.search`).

Every part is an L2-normalised embedding in the store's CLIP space. The query is

    q = w_text · T + w_image · I − w_negative · (N_1 + N_2 + ...)        then L2-normalised

so an image's score is its cosine with q: "beach −people" ranks beaches without people above beaches with
them (the negative pulls the query away from what it names). The defaults weigh a text and an image equally
and a negative by half: at full weight a negative close in meaning to the text (CLIP puts most texts near each
other) cancels much of it.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from clipstore.errors import InvalidOptionError

DEFAULT_WEIGHTS: dict[str, float] = {"text": 1.0, "image": 1.0, "negative": 0.5}
"""The weight of each part of a combined query; `Store.search(weights=...)` overrides some or all of them."""


def query_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """DEFAULT_WEIGHTS with `weights` applied; InvalidOptionError for an unknown part or a weight that is not a
    finite number >= 0."""
    merged = dict(DEFAULT_WEIGHTS)
    for name, value in (weights or {}).items():
        if name not in DEFAULT_WEIGHTS:
            raise InvalidOptionError(f"Unknown query weight {name!r}: the parts are {', '.join(DEFAULT_WEIGHTS)}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InvalidOptionError(f"The weight of the {name} must be a finite number >= 0, not {value!r}.")
        merged[name] = float(value)
    return merged


def negatives_of(negative: str | Sequence[str] | None) -> list[str]:
    """The negative texts of a query: one text or several; blank ones are left out."""
    if negative is None:
        return []
    texts = [negative] if isinstance(negative, str) else list(negative)
    for text in texts:
        if not isinstance(text, str):
            raise InvalidOptionError(f"A negative must be a text, not {type(text).__name__}.")
    return [text for text in texts if text.strip()]


def combine(
    text: np.ndarray | None,
    image: np.ndarray | None,
    negatives: np.ndarray | None,
    weights: Mapping[str, float],
) -> np.ndarray:
    """The combined query vector, shape (d,), unit length, from a text embedding (d,), an image embedding (d,)
    and negative text embeddings (n, d) (each may be None); `weights` as from `query_weights`.

    InvalidOptionError when nothing positive is left to search for (no text or image, or their weights are 0),
    or when the parts cancel out (e.g. a text minus itself at the same weight)."""
    parts = [(weights["text"], text), (weights["image"], image)]
    positive = [(weight, _unit(vector)) for weight, vector in parts if vector is not None and weight > 0]
    if not positive:
        raise InvalidOptionError(
            "A search needs a text or an image (with a weight above 0); a negative only says what to leave out."
        )
    query = sum(weight * vector for weight, vector in positive)
    if negatives is not None and len(negatives) and weights["negative"] > 0:
        query = query - weights["negative"] * sum(_unit(vector) for vector in np.asarray(negatives, dtype=np.float32))
    norm = float(np.linalg.norm(query))
    if norm < 1e-6:
        raise InvalidOptionError("The parts of this query cancel out (the negative is the text itself): change a weight or the texts.")
    return (query / norm).astype(np.float32)


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
