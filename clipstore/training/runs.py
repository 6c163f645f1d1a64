"""Run identity for trainers: a resumable run is found again by its key (finished model folders are saved whole
or not at all by `clipstore.db.location.StoreLocation.saved_folder`)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

from clipstore.encoders.identity import ModelIdentity


def run_key(model: ModelIdentity, store_root: str, options: dict[str, Any], data: Iterable[str]) -> str:
    """16 hex characters identifying a training run: the same store model, options and data give the same
    key, so an interrupted run's checkpoint is found and resumed. The model is taken as the store records it
    (in-store checkpoints relative to the store), so a moved store still resumes."""
    digest = hashlib.sha256()
    digest.update(model.portable(store_root).to_json().encode())
    digest.update(json.dumps(options, sort_keys=True).encode())
    for part in data:
        digest.update(part.encode())
        digest.update(b"|")
    return digest.hexdigest()[:16]

