"""The store's (image, prompt) pairs and their fixed train / validation / held-out split.

Images that carry a prompt (read at ingest from generator metadata, a sidecar caption or a manifest) are the
training data of Model A and the evaluation data of `clipstore eval`. Each image's split is a pure function of
its prompt (of its id, the SHA-256 of its bytes, when it has none), so it never changes as the store grows and
a held-out answer never leaks into training: about 80% train, 10% validation, 10% held-out (test).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from clipstore.db import tables
from clipstore.errors import InvalidOptionError

if TYPE_CHECKING:
    import lancedb

SPLITS = ("train", "validation", "test")
_SPLIT_EDGES = (0.8, 0.9)


@dataclass(frozen=True)
class Pairs:
    """(image, prompt) pairs: image ids, prompts, one readable path per image (None if none is readable),
    the stored CLIP image embeddings (n, d), and each pair's split name."""

    ids: tuple[str, ...]
    prompts: tuple[str, ...]
    paths: tuple[str | None, ...]
    embeddings: np.ndarray
    splits: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices) -> "Pairs":
        indices = [int(i) for i in indices]
        return Pairs(
            tuple(self.ids[i] for i in indices),
            tuple(self.prompts[i] for i in indices),
            tuple(self.paths[i] for i in indices),
            self.embeddings[indices] if len(indices) else self.embeddings[:0],
            tuple(self.splits[i] for i in indices),
        )

    def split(self, name: str) -> "Pairs":
        """The pairs of one split ("train", "validation" or "test")."""
        if name not in SPLITS:
            raise InvalidOptionError(f"split must be one of {SPLITS}, not {name!r}")
        return self.subset([i for i, s in enumerate(self.splits) if s == name])


def split_for(image_id: str, prompt: str | None) -> str:
    """The split of an image: decided by its prompt when it has one (so every image made from one prompt, e.g.
    Stable Diffusion outputs of several seeds, lands in the same split and a held-out answer is never trained
    on), else by its id. Stable across runs, machines and store growth."""
    if prompt and prompt.strip():
        from clipstore.prompts.bank import prompt_id

        return split_of(prompt_id(prompt.strip()))
    return split_of(image_id)


def split_of(image_id: str) -> str:
    """The split of a key (an image id or a prompt id), from the key alone."""
    digest = hashlib.sha256(b"clipstore-split:" + image_id.encode("ascii", "replace")).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0**64
    if position < _SPLIT_EDGES[0]:
        return "train"
    return "validation" if position < _SPLIT_EDGES[1] else "test"


def load_pairs(db: "lancedb.DBConnection") -> Pairs:
    """Every stored image that carries a prompt, ordered by image id (deterministic)."""
    images = tables.open_images(db)
    if "prompt" not in images.schema.names:
        return _empty(images)
    data = images.search().where("prompt IS NOT NULL").select(["id", "prompt", "embedding"]).limit(None).to_arrow()
    rows = [(i, p, n) for n, (i, p) in enumerate(zip(data.column("id").to_pylist(), data.column("prompt").to_pylist())) if p and p.strip()]
    rows.sort()
    if not rows:
        return _empty(images)
    vectors = tables.vector_matrix(data.column("embedding"))[[n for _, _, n in rows]]
    paths = tables.paths_by_image(db)
    ids = tuple(i for i, _, _ in rows)
    return Pairs(
        ids,
        tuple(p.strip() for _, p, _ in rows),
        tuple(readable_path(paths.get(i, [])) for i in ids),
        vectors,
        tuple(split_for(i, p) for i, (_, p, _) in zip(ids, rows)),
    )


def readable_path(paths: list[str]) -> str | None:
    """The first of an image's paths that is a readable file, or None (training and fine-tuning need the file)."""
    for path in paths:
        if os.path.isfile(path) and os.access(path, os.R_OK):
            return path
    return None


def _empty(images) -> Pairs:
    dim = images.schema.field("embedding").type.list_size
    return Pairs((), (), (), np.zeros((0, dim), np.float32), ())
