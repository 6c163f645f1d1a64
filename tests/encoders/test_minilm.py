"""The MiniLM text encoder of the prompt bank."""

from __future__ import annotations

import numpy as np


def test_minilm_embeds_paraphrases_close_and_unrelated_text_far():
    from clipstore.encoders.minilm import MINILM_DIM, load_minilm_encoder

    encoder = load_minilm_encoder()
    vectors = encoder.encode(["a red circle on a white background", "a crimson disc on white", "stock market report"])
    assert vectors.shape == (3, MINILM_DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert load_minilm_encoder() is encoder
