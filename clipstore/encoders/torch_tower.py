"""A cached vision tower run by torch, for processes that only embed images: no open_clip import.

A process that embeds images with `ClipEncoder` imports open_clip (which pulls in torchvision's model zoo and
transformers) and builds the whole model, text tower included: several seconds per process. A distributed
ingest starts a fresh embed worker per CPU or GPU for every run, so that start is paid by every worker of every
run. When this machine's tower cache holds the model's vision tower (`clipstore.encoders.tower_cache`: written
the first time the model is loaded here, after checking it against open_clip), `cached_torch_tower` builds the
same network from those weights in plain torch instead: the patch convolution, the class token and positions,
the pre-LN residual blocks (`F.layer_norm`, multi-head attention through `F.scaled_dot_product_attention`, the
MLP and its activation, optional layer scale), the final LayerNorm, pooling and projection — the computation
`towers.VisionTower` does in numpy, on whole batches, in fp32 or bf16, on the CPU or a GPU. Its embeddings agree
with `ClipEncoder`'s at cosine >= 0.9999 in fp32 and >= 0.999 in bf16 (tests/encoders/test_torch_tower.py).
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from clipstore.encoders.identity import ModelIdentity

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from clipstore.encoders.clip import ClipEncoder


_towers: dict[tuple[str, str, str], "TorchVisionTower"] = {}
_towers_lock = threading.Lock()


def load_image_embedder(identity: ModelIdentity, *, device: str | None = None, precision: str = "auto") -> "TorchVisionTower | ClipEncoder":
    """What embeds a batch of images for ingest (`prepare`, `encode_prepared`, `decode_min_side`, `device`):
    the model's vision tower in torch from this machine's tower cache (see the module docstring); when the
    cache does not hold it yet, the full `ClipEncoder` is loaded, which caches it, and then the tower is used.
    So every image is embedded the same way whether or not the cache was warm; `ClipEncoder` itself only for
    models the tower cache cannot hold (or cannot be written), and for int8. Loaded once per process."""
    from clipstore.encoders.clip import default_device, load_clip_encoder, resolve_precision

    device = device or default_device()
    key = (identity.to_json(), device, resolve_precision(precision, device))
    with _towers_lock:
        if key not in _towers:
            tower = cached_torch_tower(identity, device=device, precision=key[2])
            if tower is None:
                encoder = load_clip_encoder(identity, device=device, precision=precision)  # caches the towers
                tower = cached_torch_tower(identity, device=device, precision=key[2])
                if tower is None:
                    return encoder
            _towers[key] = tower
        return _towers[key]


def cached_torch_tower(identity: ModelIdentity, *, device: str = "cpu", precision: str = "fp32") -> "TorchVisionTower | None":
    """`identity`'s vision tower as a `TorchVisionTower`, or None when the tower cache has no vision tower for
    it here (or `precision` is not fp32/bf16: the opt-in int8 path needs open_clip's modules)."""
    if precision not in ("fp32", "bf16"):
        return None
    from clipstore.encoders.tower_cache import cached_tower
    from clipstore.encoders.towers import VisionTower

    tower = cached_tower("vision", identity)
    if not isinstance(tower, VisionTower):
        return None
    return TorchVisionTower(identity, tower.spec, tower.weights, device=device, precision=precision)


class TorchVisionTower:
    """`ClipEncoder.encode_prepared` for one model's vision tower, from the tower cache's spec and weights."""

    def __init__(self, identity: ModelIdentity, spec: Mapping[str, Any], weights: Mapping[str, np.ndarray], *, device: str, precision: str):
        import torch

        self.identity = identity
        self.device = device
        self.precision = precision
        self.dim = int(spec["embed_dim"])
        self._dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self._spec = dict(spec)
        self._width, self._heads = int(spec["width"]), int(spec["heads"])
        self._eps = float(spec["eps"])
        self._w = {name: torch.from_numpy(np.array(array, dtype=np.float32)).to(device=device, dtype=self._dtype) for name, array in weights.items()}
        self._mean = torch.tensor(identity.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(identity.std, dtype=torch.float32).view(1, -1, 1, 1)
        self._activation = _activation(spec["activation"])
        from clipstore.encoders.geometry import geometry_for

        geometry = geometry_for(identity)
        if geometry is None:  # the tower cache only holds models with these resize modes
            raise ValueError(f"no Pillow geometry for {identity.spec} ({identity.resize_mode}, {identity.interpolation})")
        self._geometry = geometry

    @property
    def decode_min_side(self) -> int:
        """See ModelIdentity.decode_min_side."""
        return self.identity.decode_min_side

    def prepare(self, image: "Image.Image") -> np.ndarray:
        """One RGB PIL image -> uint8 (H, W, 3), resized and cropped as `ClipEncoder.prepare` does (bit for bit:
        `encoders.geometry`, which covers every model the tower cache holds). Thread-safe."""
        return np.asarray(self._geometry(image))

    def encode_prepared(self, prepared: Sequence[np.ndarray], *, concurrent: bool = False) -> np.ndarray:
        """uint8 pixels (n of (H, W, 3), as `ClipEncoder.prepare` makes them) -> (n, embed_dim) float32,
        L2-normalised. `concurrent` is accepted for `ClipEncoder`'s signature (this object holds no lock)."""
        import torch

        if not len(prepared):
            return np.zeros((0, self.dim), dtype=np.float32)
        pixels = torch.from_numpy(np.stack(prepared)).permute(0, 3, 1, 2).contiguous()
        pixels = pixels.to(torch.float32).div_(255).sub_(self._mean).div_(self._std)
        with torch.inference_mode():
            features = self._forward(pixels.to(device=self.device, dtype=self._dtype)).float()
            features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return features.cpu().numpy()

    def _forward(self, pixels: "torch.Tensor") -> "torch.Tensor":
        import torch
        import torch.nn.functional as F

        w, spec = self._w, self._spec
        x = F.conv2d(pixels, w["conv1.weight"], stride=int(spec["patch_size"]))  # (n, width, rows, cols)
        x = x.flatten(2).transpose(1, 2)  # (n, patches, width)
        x = torch.cat([w["class_embedding"].expand(x.shape[0], 1, -1), x], dim=1) + w["positional_embedding"]
        if spec["ln_pre"]:
            x = self._norm(x, "ln_pre")
        for layer in range(int(spec["layers"])):
            prefix = f"blocks.{layer}."
            x = x + self._scaled(self._attention(self._norm(x, prefix + "ln_1"), prefix), prefix + "ls_1")
            hidden = self._activation(self._linear(self._norm(x, prefix + "ln_2"), prefix + "mlp.c_fc"))
            x = x + self._scaled(self._linear(hidden, prefix + "mlp.c_proj"), prefix + "ls_2")
        tokens = x[:, 0] if spec["pool"] == "tok" else x[:, 1:].mean(dim=1)
        if spec["final_ln_after_pool"]:
            pooled = self._norm(tokens, "ln_post")
        else:
            x = self._norm(x, "ln_post")
            pooled = x[:, 0] if spec["pool"] == "tok" else x[:, 1:].mean(dim=1)
        return pooled @ w["proj"] if spec["projection"] else pooled

    def _norm(self, x: "torch.Tensor", name: str) -> "torch.Tensor":
        import torch.nn.functional as F

        return F.layer_norm(x, (x.shape[-1],), self._w[f"{name}.weight"], self._w[f"{name}.bias"], self._eps)

    def _linear(self, x: "torch.Tensor", name: str) -> "torch.Tensor":
        import torch.nn.functional as F

        return F.linear(x, self._w[f"{name}.weight"], self._w[f"{name}.bias"])

    def _scaled(self, x: "torch.Tensor", name: str) -> "torch.Tensor":
        return x * self._w[f"{name}.gamma"] if self._spec["layer_scale"] else x

    def _attention(self, x: "torch.Tensor", prefix: str) -> "torch.Tensor":
        import torch.nn.functional as F

        n, length, width = x.shape
        heads = self._heads
        q, k, v = (
            part.reshape(n, length, heads, width // heads).transpose(1, 2)
            for part in self._linear(x, prefix + "attn.in_proj").chunk(3, dim=-1)
        )
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(width // heads))
        return self._linear(out.transpose(1, 2).reshape(n, length, width), prefix + "attn.out_proj")


def _activation(name: str):
    import torch
    import torch.nn.functional as F

    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    raise ValueError(f"unknown activation {name!r}")
