"""CLIP's text and vision towers in numpy: one query embedded without torch or open_clip.

A cold `clipstore search` embeds one text, and `clipstore similar` one image; importing torch and open_clip for
that costs seconds, the arithmetic milliseconds. These towers compute what open_clip's `encode_text` and
`encode_image` compute, in float32, for the models whose towers are open_clip's plain pre-LN transformers:
token (or patch) embeddings plus positions, residual blocks (LayerNorm, multi-head self-attention, LayerNorm,
MLP with GELU / tanh-GELU / QuickGELU, optional layer scale), the final LayerNorm, the pooled token and the
projection. Their weights and a `spec` describing them come from `clipstore.encoders.tower_cache`, which writes
them only after checking them against the full open_clip model (`clipstore.encoders.tower_export`); any model
they cannot represent is never cached, and keeps using `ClipEncoder`.

Both towers return float32 arrays of shape (n, embed_dim), each row L2-normalised, like `ClipEncoder`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from clipstore.encoders.tokenizer import ClipTokenizer

Arrays = Mapping[str, np.ndarray]
ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu")
TEXT_POOLS = ("argmax", "eos", "first", "last")
VISION_POOLS = ("tok", "avg")
TEXT_PROJECTIONS = ("matrix", "linear", "none")
RESIZE_MODES = ("shortest", "squash")
INTERPOLATIONS = ("bicubic", "bilinear")


def _erf(x: np.ndarray) -> np.ndarray:
    """erf, to within 1.5e-7 (Abramowitz & Stegun 7.1.26), computed in float64: numpy has no erf."""
    z = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-z * z))


def _gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(np.float32)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _quick_gelu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-1.702 * x))


_ACTIVATION_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "quick_gelu": _quick_gelu,
}


def _layer_norm(x: np.ndarray, weights: Arrays, name: str, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(variance + eps) * weights[f"{name}.weight"] + weights[f"{name}.bias"]


def _linear(x: np.ndarray, weights: Arrays, name: str) -> np.ndarray:
    """torch.nn.Linear: x @ W.T + b."""
    return x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]


class Transformer:
    """open_clip's `Transformer` of `ResidualAttentionBlock`s for one sequence (L, width) at a time.

    spec: width, heads, layers, activation (one of ACTIVATIONS), eps (of every LayerNorm), layer_scale (bool).
    weights: `blocks.{i}.` + ln_1, attn.in_proj (weight (3w, w), bias), attn.out_proj, ln_2, mlp.c_fc,
    mlp.c_proj (weight and bias each), and ls_1.gamma / ls_2.gamma with layer scale.
    """

    def __init__(self, spec: Mapping[str, Any], weights: Arrays):
        self.width = int(spec["width"])
        self.heads = int(spec["heads"])
        self.layers = int(spec["layers"])
        self.eps = float(spec["eps"])
        self.layer_scale = bool(spec["layer_scale"])
        self.activation = _ACTIVATION_FUNCTIONS[spec["activation"]]
        self.weights = weights

    def __call__(self, x: np.ndarray, *, causal: bool) -> np.ndarray:
        """x (L, width) float32 -> (L, width): every block, each position attending to all positions, or with
        `causal` to itself and the ones before it."""
        for layer in range(self.layers):
            prefix = f"blocks.{layer}."
            attended = self._attention(_layer_norm(x, self.weights, prefix + "ln_1", self.eps), prefix, causal)
            x = x + self._scaled(attended, prefix + "ls_1")
            hidden = self.activation(_linear(_layer_norm(x, self.weights, prefix + "ln_2", self.eps), self.weights, prefix + "mlp.c_fc"))
            x = x + self._scaled(_linear(hidden, self.weights, prefix + "mlp.c_proj"), prefix + "ls_2")
        return x

    def _scaled(self, x: np.ndarray, name: str) -> np.ndarray:
        return x * self.weights[f"{name}.gamma"] if self.layer_scale else x

    def _attention(self, x: np.ndarray, prefix: str, causal: bool) -> np.ndarray:
        length, head_width = x.shape[0], self.width // self.heads
        qkv = _linear(x, self.weights, prefix + "attn.in_proj")  # (L, 3w)
        q, k, v = (part.reshape(length, self.heads, head_width).transpose(1, 0, 2) for part in np.split(qkv, 3, axis=1))
        scores = (q / np.float32(math.sqrt(head_width))) @ k.transpose(0, 2, 1)  # (heads, L, L)
        if causal:
            scores = np.where(np.tri(length, dtype=bool), scores, np.float32(-np.inf))
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        out = (scores @ v).transpose(1, 0, 2).reshape(length, self.width)
        return _linear(out, self.weights, prefix + "attn.out_proj")


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run numpy's BLAS on one thread: a query's matrices are small (a few tokens, 50 patches), and OpenBLAS's
    threads spin-wait, so on a busy machine (other processes on the cores) they make a query 5-20x slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def _normalised(rows: list[np.ndarray], dim: int) -> np.ndarray:
    if not rows:
        return np.zeros((0, dim), dtype=np.float32)
    matrix = np.stack(rows).astype(np.float32, copy=False)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


class TextTower:
    """open_clip's `encode_text` for one model, in numpy (see the module docstring).

    spec: the Transformer's keys, plus embed_dim, context_length, pool (TEXT_POOLS), eos_id (for "eos"),
    projection (TEXT_PROJECTIONS). weights: the Transformer's, plus positional_embedding (context_length, w),
    ln_final, and text_projection (w, d) for "matrix" or text_projection.weight/.bias for "linear".
    token_rows(ids): the rows of the token embedding for these ids, (len(ids), w) — read on demand, so a query
    touches a few rows of the (vocab, w) table, not all of it.
    """

    def __init__(self, spec: Mapping[str, Any], weights: Arrays, token_rows: Callable[[Sequence[int]], np.ndarray], tokenizer: "ClipTokenizer"):
        self.spec = dict(spec)
        self.dim = int(spec["embed_dim"])
        self.weights = weights
        self.tokenizer = tokenizer
        self._token_rows = token_rows
        self._transformer = Transformer(spec, weights)

    def encode_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Texts -> (n, embed_dim) float32, L2-normalised (`batch_size` is accepted for ClipEncoder's signature)."""
        with _one_blas_thread():
            return _normalised([self._embed(ids) for ids in self.tokenizer(list(texts))], self.dim)

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        pool = self.spec["pool"]
        if pool == "argmax":
            position = int(np.argmax(ids))
        elif pool == "eos":
            position = int(np.argmax(ids == int(self.spec["eos_id"])))
        elif pool == "first":
            position = 0
        else:
            position = len(ids) - 1
        # Causal attention: positions up to the pooled one never see the later ones, so they are all it takes.
        used = ids[: position + 1]
        x = self._token_rows([int(i) for i in used]) + self.weights["positional_embedding"][: len(used)]
        x = self._transformer(x.astype(np.float32, copy=False), causal=True)
        pooled = _layer_norm(x[position], self.weights, "ln_final", self._transformer.eps)
        projection = self.spec["projection"]
        if projection == "matrix":
            return pooled @ self.weights["text_projection"]
        if projection == "linear":
            return _linear(pooled, self.weights, "text_projection")
        return pooled


class VisionTower:
    """open_clip's image preprocessing and `encode_image` for one ViT, in PIL and numpy.

    spec: the Transformer's keys, plus embed_dim, patch_size, image_size, ln_pre (bool), pool (VISION_POOLS),
    final_ln_after_pool (bool), projection (bool) and preprocess {image_size, mean, std, interpolation,
    resize_mode} (open_clip's `image_transform` for inference). weights: the Transformer's, plus
    conv1.weight (w, 3, p, p), class_embedding (w,), positional_embedding (1 + patches, w), ln_pre, ln_post,
    proj (w, d).
    """

    def __init__(self, spec: Mapping[str, Any], weights: Arrays):
        self.spec = dict(spec)
        self.dim = int(spec["embed_dim"])
        self.weights = weights
        self._transformer = Transformer(spec, weights)
        width, patch = int(spec["width"]), int(spec["patch_size"])
        self._patch_matrix = weights["conv1.weight"].reshape(width, 3 * patch * patch)

    @property
    def decode_min_side(self) -> int:
        """Shorter side an image must keep when decoded at reduced scale (as ModelIdentity.decode_min_side)."""
        return 2 * int(self.spec["preprocess"]["image_size"])

    def preprocess(self, image: "Image.Image") -> np.ndarray:
        """One PIL image -> float32 (3, H, W): open_clip's inference transform (resize, centre crop, RGB,
        scale to [0, 1], normalise by mean and std), with the same PIL calls torchvision makes."""
        from clipstore.encoders.geometry import resize_and_crop

        config = self.spec["preprocess"]
        image = resize_and_crop(image, int(config["image_size"]), config["interpolation"], config["resize_mode"])
        pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
        mean = np.asarray(config["mean"], dtype=np.float32)
        std = np.asarray(config["std"], dtype=np.float32)
        return ((pixels - mean) / std).transpose(2, 0, 1)

    def encode_images(self, images: Sequence["Image.Image"], batch_size: int | None = None) -> np.ndarray:
        """PIL images -> (n, embed_dim) float32, L2-normalised (`batch_size` is accepted for ClipEncoder's
        signature)."""
        with _one_blas_thread():
            return _normalised([self.encode_pixels(self.preprocess(image)) for image in images], self.dim)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """One preprocessed image (3, H, W) -> its (embed_dim,) embedding, not normalised."""
        patch = int(self.spec["patch_size"])
        channels, height, width = pixels.shape
        rows, cols = height // patch, width // patch
        patches = (
            pixels[:, : rows * patch, : cols * patch]
            .reshape(channels, rows, patch, cols, patch)
            .transpose(1, 3, 0, 2, 4)
            .reshape(rows * cols, channels * patch * patch)
        )
        x = patches @ self._patch_matrix.T  # the stride-p convolution without bias
        x = np.concatenate([self.weights["class_embedding"][None, :], x]) + self.weights["positional_embedding"]
        eps = self._transformer.eps
        if self.spec["ln_pre"]:
            x = _layer_norm(x, self.weights, "ln_pre", eps)
        x = self._transformer(x.astype(np.float32, copy=False), causal=False)
        pool = self.spec["pool"]
        if self.spec["final_ln_after_pool"]:
            pooled = _layer_norm(x[0] if pool == "tok" else x[1:].mean(axis=0), self.weights, "ln_post", eps)
        else:
            x = _layer_norm(x, self.weights, "ln_post", eps)
            pooled = x[0] if pool == "tok" else x[1:].mean(axis=0)
        return pooled @ self.weights["proj"] if self.spec["projection"] else pooled
