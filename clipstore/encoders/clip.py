"""The open_clip encoder: images and texts into one L2-normalised embedding space.

Weights load once per process (see `load_clip_encoder`). On CPUs with native bf16 (AVX-512 BF16 / AMX) the
model runs as a bf16 copy, which is several times faster than fp32 and agrees with it at cosine >= 0.999
(checked in tests/encoders/test_clip.py); elsewhere it runs in fp32. `precision="int8"` (opt-in, CPU) runs the
image tower's linear layers with dynamic int8 quantisation (agreement with fp32 >= 0.99 required by the tests).

Images go through the model in two steps so that the costly part runs in worker threads: `prepare` (resize and
crop, the geometric half of the model's preprocessing, to uint8 pixels; thread-safe, releases the GIL) and
`encode_prepared` (a whole batch converted to floats, normalised and embedded at once).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from clipstore.errors import InvalidOptionError, ModelMismatchError, ModelUnavailableError
from clipstore.encoders.identity import (
    MINI_ARCHITECTURE,
    MINI_WEIGHTS,
    RANDOM_SEED,
    RANDOM_WEIGHTS,
    ModelIdentity,
    bundled_mini_weights,
    file_sha256,
    register_builtin_architectures,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

PRECISIONS = ("auto", "fp32", "bf16", "int8")
"""`auto` is bf16 where the hardware has it (CUDA, CPUs with native bf16), else fp32; `int8` is opt-in, CPU only."""


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX), where bf16 pays off."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """The precision `auto` means on this machine: bf16 on bf16-capable CPUs and on CUDA, else fp32."""
    if precision not in PRECISIONS:
        raise InvalidOptionError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "int8" and not device.startswith("cpu"):
        raise InvalidOptionError(
            f"precision 'int8' (dynamic int8 quantisation) runs on the CPU only, not on {device!r}. "
            "Use precision='auto' or 'bf16' there, or device='cpu'."
        )
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16"
    return "bf16" if device == "cpu" and cpu_supports_bf16() else "fp32"


def limit_torch_threads(threads: int) -> None:
    """Run this thread's torch operations on at most `threads` cores (torch's OpenMP team is per calling thread;
    MKL's count is process-wide, so the caller restores it with `torch_threads`' value when its threads end)."""
    import torch

    torch.set_num_threads(max(1, threads))


def torch_threads() -> int:
    """How many cores this thread's torch operations use."""
    import torch

    return torch.get_num_threads()


_no_lock = contextlib.nullcontext()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ClipEncoder:
    """An open_clip model ready for inference.

    `encode_images` / `encode_texts` return float32 arrays of shape (n, embed_dim), each row L2-normalised.
    `prepare` turns one RGB PIL image into the model's input pixels (uint8); it is thread-safe, so ingest runs
    it in worker threads, and `encode_prepared` embeds a batch of them. `preprocess` is both halves of the
    preprocessing for one image (a float tensor, e.g. for training).
    """

    def __init__(self, identity: ModelIdentity, *, device: str | None = None, precision: str = "auto"):
        import torch

        self.identity = identity
        self.device = device or default_device()
        self.precision = resolve_precision(precision, self.device)
        self._dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        model = create_model(identity)
        model.eval().requires_grad_(False)
        transform = _image_transform(identity)
        self._geometry, normalize = _split_image_transform(transform)
        self._mean = torch.tensor(normalize.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(normalize.std, dtype=torch.float32).view(1, -1, 1, 1)
        self._tokenizer = None
        self._lock = threading.Lock()
        from clipstore.encoders.tower_cache import remember_towers

        # While the model is still float32: cache its numpy towers, which a cold search embeds queries with.
        remember_towers(identity, model, transform, self._text_tokenizer)
        self.model = model.to(device=self.device, dtype=self._dtype)
        if self.precision == "int8":
            self.model.visual = _quantize_linear_layers(self.model.visual)

    @property
    def dim(self) -> int:
        return self.identity.embed_dim

    @property
    def decode_min_side(self) -> int:
        """See ModelIdentity.decode_min_side."""
        return self.identity.decode_min_side

    def prepare(self, image: "Image.Image") -> np.ndarray:
        """One RGB PIL image -> uint8 array (H, W, 3): resized and cropped to the model's input size (the
        geometric half of the preprocessing, the costly one; thread-safe, Pillow releases the GIL)."""
        return np.asarray(self._geometry(image))

    def preprocess(self, image: "Image.Image") -> "torch.Tensor":
        """One RGB PIL image -> float32 tensor (3, H, W), resized, cropped and normalised for this model."""
        return self._normalise_pixels([self.prepare(image)])[0]

    def encode_prepared(self, prepared: Sequence[np.ndarray], *, concurrent: bool = False) -> np.ndarray:
        """A batch of `prepare` outputs (each (H, W, 3) uint8) -> (n, embed_dim) float32, L2-normalised.

        `concurrent=True`: the caller runs several batches at once from its own threads, each already limited
        to its share of the cores (`limit_torch_threads`), so the encoder's lock is not taken (the model is
        read-only in inference). Ingest's lanes do this on the CPU; elsewhere calls take turns.
        """
        if not len(prepared):
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_pixels(self._normalise_pixels(prepared), concurrent=concurrent and self.device == "cpu")

    def _normalise_pixels(self, prepared: Sequence[np.ndarray]) -> "torch.Tensor":
        """uint8 (n of (H, W, 3)) -> float32 (n, 3, H, W): the same operations as open_clip's ToTensor and
        Normalize, in the same order (so the same values), done once for the whole batch."""
        import torch

        pixels = torch.from_numpy(np.stack(prepared)).permute(0, 3, 1, 2).contiguous()
        return pixels.to(torch.float32).div_(255).sub_(self._mean).div_(self._std)

    def encode_pixels(self, pixels: "torch.Tensor", *, concurrent: bool = False) -> np.ndarray:
        """A batch of preprocessed images (n, 3, H, W) -> (n, embed_dim) float32, L2-normalised.
        `concurrent`: see `encode_prepared`."""
        import torch

        with (_no_lock if concurrent else self._lock), torch.inference_mode():
            features = self.model.encode_image(pixels.to(device=self.device, dtype=self._dtype))
        return _normalise(features)

    def encode_images(self, images: Sequence["Image.Image"], batch_size: int = 64) -> np.ndarray:
        """RGB PIL images -> (n, embed_dim) float32, L2-normalised, computed in batches."""
        chunks = [
            self.encode_prepared([self.prepare(image) for image in images[start : start + batch_size]])
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Texts -> (n, embed_dim) float32, L2-normalised, in the same space as the images."""
        import torch

        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = self._text_tokenizer()(list(texts[start : start + batch_size])).to(self.device)
            with self._lock, torch.inference_mode():
                chunks.append(_normalise(self.model.encode_text(tokens)))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)

    def _text_tokenizer(self):
        """open_clip's tokenizer of this model (made on first use)."""
        import open_clip

        if self._tokenizer is None:
            self._tokenizer = open_clip.get_tokenizer(self.identity.architecture)
        return self._tokenizer


_cache: dict[tuple[str, str, str], ClipEncoder] = {}
_cache_lock = threading.Lock()


def load_clip_encoder(identity: ModelIdentity, *, device: str | None = None, precision: str = "auto") -> ClipEncoder:
    """The process-wide ClipEncoder for this identity, device and precision (loaded on first use)."""
    device = device or default_device()
    key = (identity.to_json(), device, resolve_precision(precision, device))
    with _cache_lock:
        if key not in _cache:
            _cache[key] = ClipEncoder(identity, device=device, precision=precision)
        return _cache[key]


def create_model(identity: ModelIdentity) -> "torch.nn.Module":
    """A fresh float32 open_clip model with `identity`'s weights (checked against its SHA-256), for training
    or inference; `ClipEncoder` wraps one for inference."""
    import open_clip
    import torch

    register_builtin_architectures()
    if identity.pretrained == RANDOM_WEIGHTS:
        # Seeded so that every process builds the same "random" model and vectors stay comparable.
        with torch.random.fork_rng(devices=[]), _quiet_random_init_warning():
            torch.manual_seed(RANDOM_SEED)
            return open_clip.create_model(identity.architecture, pretrained=None)
    if identity.architecture == MINI_ARCHITECTURE and identity.pretrained in MINI_WEIGHTS:
        return _load_bundled_mini(identity)
    if identity.checkpoint_sha256:
        path = identity.checkpoint_path or ""
        try:
            actual = file_sha256(path)
        except OSError as exc:
            raise ModelUnavailableError(
                f"Cannot read checkpoint {path!r} ({exc.strerror or exc}). If the file was moved, tell the store "
                "where it is now, once: `clipstore model relink /new/path/to/the/checkpoint --store STORE` "
                "(Python: store.relink_model(path)); or restore the file."
            ) from exc
        if actual != identity.checkpoint_sha256:
            raise ModelMismatchError(
                f"Checkpoint {path!r} has SHA-256 {actual[:12]}…, but the store's vectors were made by "
                f"{identity.checkpoint_sha256[:12]}…. Point --model at the original checkpoint, or relink the store "
                "to it: `clipstore model relink /path/to/the/original/checkpoint --store STORE`."
            )
        try:
            return open_clip.create_model(identity.architecture, pretrained=path)
        except Exception as exc:  # open_clip raises many kinds for a bad file
            raise ModelUnavailableError(
                f"Cannot load checkpoint {path!r} into {identity.architecture}: {exc}. "
                "Check that the file is an open_clip checkpoint for that architecture."
            ) from exc
    from clipstore.encoders.weights import ensure_weights_obtainable

    ensure_weights_obtainable(identity)  # offline: one clear error now, not minutes of download retries
    try:
        return open_clip.create_model(identity.architecture, pretrained=identity.pretrained, require_pretrained=True)
    except Exception as exc:  # download errors come from huggingface_hub, urllib, requests...
        raise ModelUnavailableError(
            f"Cannot load pretrained weights {identity.spec} ({type(exc).__name__}: {exc}). If this machine is "
            "offline, either connect once so open_clip can download and cache them, pass a local checkpoint "
            f"with --model {identity.architecture}:/path/to/weights, or use --model clipstore-mini "
            "(bundled, offline, render-world only)."
        ) from exc


def vision_tower(identity: ModelIdentity) -> "torch.nn.Module":
    """The image encoder of `identity`'s model alone (float32, trainable), e.g. for Model A's tuned tower."""
    return create_model(identity).visual.float()


def _load_bundled_mini(identity: ModelIdentity) -> "torch.nn.Module":
    import open_clip
    from safetensors.torch import load_file

    expected = MINI_WEIGHTS[identity.pretrained][1]
    if identity.checkpoint_sha256 != expected:
        raise ModelMismatchError(
            f"This store's vectors were made by other clipstore-mini:{identity.pretrained} weights (SHA-256 "
            f"{(identity.checkpoint_sha256 or '')[:12]}…) than the ones this clipstore bundles under that tag "
            f"({expected[:12]}…). Re-ingest into a new store (--store NEW_PATH) to use them."
        )
    path = bundled_mini_weights(identity.pretrained)
    if not path.is_file() or file_sha256(path) != expected:
        raise ModelUnavailableError(
            f"The bundled clipstore-mini weights at {path} are missing or damaged (SHA-256 does not match). "
            "Reinstall clipstore (pip install --force-reinstall clipstore), or rebuild them with "
            "scripts/train_clipstore_mini.py."
        )
    with _quiet_random_init_warning():
        model = open_clip.create_model(MINI_ARCHITECTURE, pretrained=None)
    model.load_state_dict(load_file(str(path)))  # float16 on disk; copied into the float32 parameters
    return model


@contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    """Hide open_clip's "initialized randomly" warning: random weights are what the user asked for."""

    def drop(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def image_geometry(identity: ModelIdentity):
    """The geometric half of `identity`'s preprocessing (resize and crop, a callable on RGB PIL images) without
    loading any weights: `ClipEncoder.prepare` as a function, for processes that decode images but never embed
    them (the decode workers of a distributed ingest). `np.asarray(geometry(image))` equals `prepare(image)`.
    For the usual resize modes it is Pillow alone (`encoders.geometry`: no torch or open_clip import)."""
    from clipstore.encoders.geometry import geometry_for

    return geometry_for(identity) or _split_image_transform(_image_transform(identity))[0]


def _image_transform(identity: ModelIdentity):
    import open_clip

    return open_clip.image_transform(
        identity.image_size,
        is_train=False,
        mean=identity.mean,
        std=identity.std,
        resize_mode=identity.resize_mode,
        interpolation=identity.interpolation,
    )


def _split_image_transform(transform):
    """open_clip's inference transform -> (its geometric part, a callable on PIL images, and its Normalize)."""
    from torchvision import transforms as T

    steps = list(transform.transforms)
    names = [type(step).__name__ for step in steps]
    at = next((i for i, name in enumerate(names) if name in ("ToTensor", "MaybeToTensor")), None)
    if at is None or names[at + 1 :] != ["Normalize"]:
        raise ModelUnavailableError(
            f"Unexpected open_clip image transform ({', '.join(names)}): clipstore expects resize/crop steps, "
            "then ToTensor and Normalize. Install the open_clip_torch version clipstore lists in its requirements."
        )
    return T.Compose(steps[:at]), steps[at + 1]


def _quantize_linear_layers(module: "torch.nn.Module") -> "torch.nn.Module":
    """`module` with every nn.Linear replaced by a dynamically quantised int8 one (weights int8 per tensor,
    activations quantised per batch at run time). Attention's fused input projection stays float."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)


def _normalise(features: "torch.Tensor") -> np.ndarray:
    array = features.float().cpu().numpy()
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return (array / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
