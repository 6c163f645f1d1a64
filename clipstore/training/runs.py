"""Run identity and saving for trainers: a resumable run is found again by its key, and a finished model
folder appears whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

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


@contextmanager
def saved_folder(final: str) -> Iterator[str]:
    """Write a model folder atomically: the body writes into `<final>.partial`, which becomes `final` only when
    it returns (a crash leaves no half-written `final`; listings skip `.partial` folders)."""
    partial = final + ".partial"
    os.makedirs(partial, exist_ok=True)
    yield partial
    os.replace(partial, final)
