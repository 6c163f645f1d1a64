"""Model specs and model identity.

A model spec is what a user types (`--model`): `ARCH:TAG` for open_clip pretrained weights
(`ViT-B-32:laion2b_s34b_b79k`), `ARCH:/path/to/checkpoint` for a local file, or `ARCH:random` for a
seeded random initialisation (tests and benchmarks only). The *identity* resolved from it — architecture,
weights, embedding dimension and preprocessing — is stored with the store's tables, so a store always
knows which model made its vectors and refuses vectors from another one.

Resolving an identity reads open_clip's configs (and hashes a checkpoint file) but never loads weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path, PurePath
from typing import Any, Mapping

from clipstore.errors import ModelSpecError
from clipstore.paths import is_uri

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"
"""The model a new store uses when none is named: a real CLIP, downloaded by open_clip on first use."""

MINI_ARCHITECTURE = "clipstore-mini"
"""clipstore's own small open_clip architecture (64 px ViT), registered from `model_configs/`."""

RANDOM_WEIGHTS = "random"
"""Pretrained tag meaning 'seeded random initialisation': deterministic, meaningless vectors."""

MINI_WEIGHTS: dict[str, tuple[str, str]] = {
    "world-v1": ("clipstore-mini-world-v1.safetensors", "a2f929a440f3d3b962afd83b35ed1b84d0791fa771ef093ad888460b6285619f"),
    "world-v2": ("clipstore-mini-world-v2.safetensors", "5f10115a9af8fd656afa561952ab2c72aeffeff5c93b696ec42e07e4411ea377"),
}
"""The clipstore-mini weights bundled in the package: pretrained tag -> (file in clipstore/weights, its SHA-256,
checked on load; scripts/train_clipstore_mini.py prints it). Weights trained with another recipe ship under a
tag of their own beside the old ones, so stores made with the old ones keep working."""

MINI_WEIGHTS_TAG = "world-v2"
"""The pretrained tag `clipstore-mini` means when no tag is given (new stores); stores keep the tag they were made with."""

MINI_WEIGHTS_SHA256 = MINI_WEIGHTS[MINI_WEIGHTS_TAG][1]
"""SHA-256 of the default bundled weights."""

RANDOM_SEED = 0

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


@dataclass(frozen=True)
class ModelIdentity:
    """Everything that decides which vectors a model makes.

    architecture: open_clip model name, e.g. "ViT-B-32".
    pretrained: open_clip pretrained tag, "random", or None when weights come from a checkpoint file.
    checkpoint_sha256: SHA-256 of the checkpoint file's bytes, or None.
    checkpoint_path: where the checkpoint is (informational; the hash is what identifies it). Absolute in
        memory; a store records a checkpoint inside itself relative to its folder (see `portable`).
    embed_dim: length of the image/text embedding.
    image_size, mean, std, interpolation, resize_mode: the image preprocessing.
    """

    architecture: str
    pretrained: str | None
    checkpoint_sha256: str | None
    checkpoint_path: str | None
    embed_dim: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    resize_mode: str

    @property
    def spec(self) -> str:
        """The `--model` value that reproduces this identity."""
        return f"{self.architecture}:{self.checkpoint_path or self.pretrained}"

    @property
    def decode_min_side(self) -> int:
        """Shorter side (pixels) an image must keep when decoded at reduced scale: the model's input size (a
        JPEG is decoded at the smallest DCT scale that keeps both sides at least this long, and the model's own
        bicubic resize does the rest). Against a full decode the vectors agree at cosine >= 0.9995 (clipstore-mini,
        random ViT-B-32; tests/ingest/test_reduced_decode.py, BENCHMARKS.md "Ingest throughput"), and decoding a
        640x480 JPEG for a 224-px model costs ~2.4x less, which is what lets ingest keep up with a bf16 model."""
        return self.image_size

    @property
    def weights_label(self) -> str:
        """Human label of the weights: the tag, or `sha256:<first 12 hex>` of a checkpoint file."""
        if self.pretrained:
            return self.pretrained
        return f"sha256:{(self.checkpoint_sha256 or '')[:12]}"

    def same_vectors_as(self, other: "ModelIdentity") -> bool:
        """True when both identities produce interchangeable vectors (paths of checkpoints may differ)."""
        return self._key() == other._key()

    def _key(self) -> tuple[Any, ...]:
        data = asdict(self)
        data.pop("checkpoint_path")
        data["mean"] = tuple(round(v, 6) for v in data["mean"])
        data["std"] = tuple(round(v, 6) for v in data["std"])
        return tuple(sorted(data.items()))

    def portable(self, store_root: str) -> "ModelIdentity":
        """This identity as the store at `store_root` records it: a checkpoint inside the store (a fine-tuned
        model under `models/<id>/`) as a path relative to the store folder, with `/` separators, so the record
        stays true when the store is moved or copied. A checkpoint elsewhere keeps its absolute path."""
        if not self.checkpoint_path:
            return self
        return replace(self, checkpoint_path=portable_path(self.checkpoint_path, store_root))

    def located(self, store_root: str, relinked: Mapping[str, str] | None = None) -> "ModelIdentity":
        """A recorded identity made usable in the store at `store_root`, with an absolute checkpoint path.

        This is where every identity read from a store gets its checkpoint path. In order: the place the
        checkpoint was relinked to (`relinked`: SHA-256 -> path, see `clipstore.db.identities`) when that file
        exists; the recorded path (relative to the store root when relative); and, for a store written before
        in-store paths were relative and since moved or copied, the same tail of the recorded path under
        `store_root` when that file has the recorded SHA-256. When none exists the recorded path is kept, and
        loading the model says how to relink it. Reads no weights; hashes a file only in that last case. For a
        store on object storage (`store_root` a URI) an in-store checkpoint is its URI, which the store's
        context turns into a local copy when the model is loaded (`StoreContext.loadable`).
        """
        if not self.checkpoint_path:
            return self
        recorded = _under(store_root, self.checkpoint_path)
        moved = (relinked or {}).get(self.checkpoint_sha256 or "")
        for candidate in (_under(store_root, moved) if moved else None, recorded):
            if candidate and os.path.isfile(candidate):
                return replace(self, checkpoint_path=candidate)
        if os.path.isabs(self.checkpoint_path) and self.checkpoint_sha256:
            parts = PurePath(self.checkpoint_path).parts
            for start in range(len(parts) - 1, 0, -1):
                candidate = os.path.join(store_root, *parts[start:])
                if os.path.isfile(candidate) and file_sha256(candidate) == self.checkpoint_sha256:
                    return replace(self, checkpoint_path=candidate)
        return replace(self, checkpoint_path=recorded)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        data["spec"] = self.spec
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelIdentity":
        fields = {name: data[name] for name in cls.__dataclass_fields__}
        fields["mean"] = tuple(fields["mean"])
        fields["std"] = tuple(fields["std"])
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> "ModelIdentity":
        return cls.from_dict(json.loads(text))


def register_builtin_architectures() -> None:
    """Register clipstore's own open_clip architectures (idempotent)."""
    import open_clip

    if MINI_ARCHITECTURE in open_clip.list_models():
        return
    config_dir = resources.files("clipstore") / "model_configs"
    for entry in config_dir.iterdir():
        if entry.name.endswith(".json"):
            with resources.as_file(entry) as path:
                open_clip.add_model_config(path)


def resolve_model(spec: str | None) -> ModelIdentity:
    """Turn a `--model` spec into a ModelIdentity without loading any weights.

    Raises ModelSpecError with the accepted forms when the spec names an unknown architecture, an unknown
    pretrained tag, or a checkpoint file that does not exist.
    """
    import open_clip

    register_builtin_architectures()
    spec = (spec or DEFAULT_MODEL).strip()
    if spec.startswith(("hf-hub:", "local-dir:")):
        raise ModelSpecError(
            f"--model {spec!r}: Hugging Face hub and local-dir model names are not supported yet. Download the "
            "open_clip checkpoint and pass ARCH:/path/to/checkpoint, or use ARCH:TAG (e.g. " + DEFAULT_MODEL + ")."
        )
    architecture, _, weights = spec.partition(":")
    architecture, weights = architecture.strip(), weights.strip()
    if architecture not in open_clip.list_models():
        close = [name for name in open_clip.list_models() if architecture.lower() in name.lower()][:8]
        hint = f" Did you mean one of: {', '.join(close)}?" if close else ""
        raise ModelSpecError(
            f"Unknown model architecture {architecture!r} in --model {spec!r}.{hint} "
            f"Use ARCH:TAG (e.g. {DEFAULT_MODEL}), ARCH:/path/to/checkpoint, or {MINI_ARCHITECTURE}."
        )
    config = open_clip.get_model_config(architecture)
    if not weights:
        weights = _default_weights(architecture)

    checkpoint_sha256 = checkpoint_path = pretrained = None
    pretrained_cfg: dict[str, Any] = {}
    if _looks_like_path(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelSpecError(
                f"Checkpoint file {str(path)!r} (from --model {spec!r}) does not exist. "
                "Give the path of an open_clip checkpoint (.pt/.safetensors) for that architecture."
            )
        checkpoint_path = str(path.resolve())
        checkpoint_sha256 = file_sha256(path)
    elif weights == RANDOM_WEIGHTS:
        pretrained = RANDOM_WEIGHTS
    elif architecture == MINI_ARCHITECTURE and weights in MINI_WEIGHTS:
        pretrained, checkpoint_sha256 = weights, MINI_WEIGHTS[weights][1]
    else:
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        if weights not in tags:
            raise ModelSpecError(
                f"Unknown pretrained tag {weights!r} for {architecture}. Known tags: "
                f"{', '.join(tags) or 'none'}; or pass a local checkpoint as {architecture}:/path/to/file."
            )
        pretrained = weights
        pretrained_cfg = open_clip.get_pretrained_cfg(architecture, weights)

    image_size = config["vision_cfg"].get("image_size", 224)
    if isinstance(image_size, (list, tuple)):
        image_size = int(image_size[0])
    preprocess_cfg = config.get("preprocess_cfg", {})
    return ModelIdentity(
        architecture=architecture,
        pretrained=pretrained,
        checkpoint_sha256=checkpoint_sha256,
        checkpoint_path=checkpoint_path,
        embed_dim=int(config["embed_dim"]),
        image_size=int(image_size),
        mean=tuple(pretrained_cfg.get("mean") or preprocess_cfg.get("mean") or _OPENAI_MEAN),
        std=tuple(pretrained_cfg.get("std") or preprocess_cfg.get("std") or _OPENAI_STD),
        interpolation=pretrained_cfg.get("interpolation") or preprocess_cfg.get("interpolation") or "bicubic",
        resize_mode=pretrained_cfg.get("resize_mode") or preprocess_cfg.get("resize_mode") or "shortest",
    )


def _default_weights(architecture: str) -> str:
    if architecture == MINI_ARCHITECTURE:
        return MINI_WEIGHTS_TAG
    raise ModelSpecError(
        f"--model {architecture!r} does not say which weights to use. Use {architecture}:TAG with a "
        f"pretrained tag (for ViT-B-32, e.g. {DEFAULT_MODEL}), or {architecture}:/path/to/checkpoint."
    )


def bundled_mini_weights(tag: str = MINI_WEIGHTS_TAG) -> Path:
    """Path of the clipstore-mini weights with pretrained tag `tag` shipped inside the package."""
    return Path(str(resources.files("clipstore") / "weights" / MINI_WEIGHTS[tag][0]))


def _looks_like_path(weights: str) -> bool:
    separators = {os.sep, os.altsep or os.sep, "/"}
    drive = len(weights) > 1 and weights[1] == ":" and weights[0].isalpha()
    return (
        any(sep in weights for sep in separators)
        or drive
        or weights.startswith("~")
        or weights.lower().endswith(_CHECKPOINT_SUFFIXES)
    )


def portable_path(path: str, store_root: str) -> str:
    """How a store records a file path: relative to the store folder with `/` separators when the file lies
    inside it (symlinks resolved; for a store on object storage, when the URI starts with the store's), else
    unchanged."""
    if is_uri(store_root):
        inside = path.startswith(store_root + "/")
        return path[len(store_root) + 1:] if inside else path
    if not os.path.isabs(path):
        return path
    real_path, real_root = os.path.realpath(path), os.path.realpath(store_root)
    try:
        if os.path.commonpath([real_path, real_root]) != real_root:
            return path
    except ValueError:  # another drive
        return path
    return PurePath(os.path.relpath(real_path, real_root)).as_posix()


def _under(root: str, path: str) -> str:
    """A recorded path made absolute: relative ones (with `/` separators) are relative to `root` (a folder, or
    the URI of a store on object storage)."""
    if os.path.isabs(path) or is_uri(path):
        return path
    return f"{root}/{path}" if is_uri(root) else os.path.join(root, *path.split("/"))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (cached per path, size and mtime)."""
    info = os.stat(path)
    return _file_sha256(os.path.realpath(path), info.st_size, info.st_mtime_ns)


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
