"""The store's images as fine-tuning data: readable paths, own prompts, class labels (from folders or a
label manifest), stored embeddings and the fixed train/validation/test split."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clipstore.db import tables
from clipstore.errors import TrainingDataError
from clipstore.finetune.options import FinetuneOptions

if TYPE_CHECKING:
    from clipstore.db.context import StoreContext

@dataclass(frozen=True)
class ImageSet:
    """The store's images for fine-tuning: ids, a readable path each, own prompts (or None), labels (or None),
    stored embeddings (n, d) and splits."""

    ids: tuple[str, ...]
    paths: tuple[str, ...]
    prompts: tuple[str | None, ...]
    labels: tuple[str | None, ...]
    embeddings: np.ndarray
    splits: tuple[str, ...]

    def rows(self, split: str) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)


def load_images(store: "StoreContext", options: FinetuneOptions) -> ImageSet:
    """Every stored image with a readable file, its own prompt, its label (if asked for) and split."""
    from clipstore.describe.pairs import readable_path, split_for

    images = tables.open_images(store.db)
    columns = ["id", "embedding"] + (["prompt"] if "prompt" in images.schema.names else [])
    data = tables.read_columns(images, columns)
    paths = tables.paths_by_image(store.db)
    manifest_labels = _manifest_labels(options.label_manifest, options.label_field) if options.label_manifest else {}
    ids = data.column("id").to_pylist()
    prompts = data.column("prompt").to_pylist() if "prompt" in columns else [None] * len(ids)
    vectors = tables.vector_matrix(data.column("embedding"))
    keep, out_paths, out_labels = [], [], []
    for row in np.argsort(np.array(ids, dtype=object), kind="stable"):
        candidates = paths.get(ids[row], [])
        path = readable_path(candidates)
        if path is None:
            continue
        label = None
        if manifest_labels:
            label = next((manifest_labels[p] for p in candidates if p in manifest_labels), None)
        elif options.labels_from_folders:
            label = os.path.basename(os.path.dirname(path)) or None
        keep.append(int(row))
        out_paths.append(path)
        out_labels.append(label)
    return ImageSet(
        tuple(ids[i] for i in keep),
        tuple(out_paths),
        tuple((prompts[i] or "").strip() or None for i in keep),
        tuple(out_labels),
        vectors[keep] if keep else np.zeros((0, vectors.shape[1] if len(vectors) else store.model.embed_dim), np.float32),
        tuple(split_for(ids[i], prompts[i]) for i in keep),
    )


def _manifest_labels(path: str, field_name: str) -> dict[str, str]:
    """{absolute image path: label} from a CSV/TSV/JSONL manifest; `field_name` may be dotted (labels.shape)."""
    from clipstore.ingest.run import read_manifest_records

    base, records = read_manifest_records(path, "label manifest")
    labels = {}
    for record in records:
        value: Any = record
        for part in field_name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(record, dict) and isinstance(record.get("path"), str) and value not in (None, ""):
            labels[os.path.normpath(os.path.join(base, os.path.expanduser(record["path"])))] = str(value)
    if not labels:
        raise TrainingDataError(f"No labels found in {path}: it needs `path` and `{field_name}` fields.")
    return labels
