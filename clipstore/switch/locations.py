"""Where a store finds the checkpoint files of its models, wherever the store itself is.

A store records model identities in several places (the tables' schema metadata, the switch history, the
configs of fine-tuned models and of Model A heads). A checkpoint inside the store is recorded relative to the
store folder (`ModelIdentity.portable`), so a moved or copied store finds its fine-tuned models where it now
is. A checkpoint outside the store is recorded with its absolute path and its SHA-256; when that file moves,
`relink` (`clipstore model relink PATH`) checks the file at its new place and remembers it in the setting
`model_locations` (SHA-256 -> path). `locate` turns any recorded identity into a usable one
(`ModelIdentity.located` with the store's relinks).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipstore.db import tables
from clipstore.db.identities import locate, relinked
from clipstore.errors import ModelMismatchError, ModelSpecError
from clipstore.encoders.identity import ModelIdentity, file_sha256, portable_path
from clipstore.results import _AsDict
from clipstore.switch.history import history
from clipstore.db import layout

if TYPE_CHECKING:
    from clipstore.db.context import StoreContext


@dataclass(frozen=True)
class RelinkReport(_AsDict):
    """What `relink` did: the model (its spec at the new place), the checkpoint's SHA-256, where the store
    looked for it before and where it finds it now."""

    model: str
    sha256: str
    previous_path: str | None
    path: str


def relink(store: "StoreContext", path: "str | os.PathLike[str]") -> RelinkReport:
    """Remember that a checkpoint of the store's model (or of a model a rollback returns to) is now at
    `path` (the caller holds the write lock). Refuses a file whose SHA-256 is not one the store's vectors
    were made with."""
    new = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isfile(new):
        raise ModelSpecError(f"{new} is not a file. Give the path of the checkpoint file at its new place.")
    known: dict[str, ModelIdentity] = {}  # SHA-256 -> the newest model with those weights
    for recorded in _recorded_models(store):
        if recorded.checkpoint_sha256 and not recorded.pretrained:
            known.setdefault(recorded.checkpoint_sha256, recorded)
    if not known:
        raise ModelSpecError(
            f"The store's model {store.model.spec} uses published weights, not a checkpoint file: there is nothing to relink."
        )
    sha = file_sha256(new)
    match = known.get(sha)
    if match is None:
        wanted = ", ".join(f"{digest[:12]}… ({m.spec})" for digest, m in known.items())
        raise ModelMismatchError(
            f"{new} has SHA-256 {sha[:12]}…, which is not a checkpoint this store's vectors were made with "
            f"(SHA-256 {wanted}). Relink the very file the store's vectors were made with; the store is unchanged."
        )
    locations = relinked(store.db)
    locations[sha] = portable_path(new, store.path)
    tables.write_setting(store.db, layout.LOCATIONS_SETTING, json.dumps(locations, sort_keys=True))
    return RelinkReport(match.located(store.path, locations).spec, sha, match.checkpoint_path, new)


def _recorded_models(store: "StoreContext") -> list[ModelIdentity]:
    """The store's model, then every model of its switch history (a rollback returns to them), located."""
    models = [store.model]
    for entry in reversed(history(store.db)):
        for key in ("model", "previous_model"):
            models.append(locate(store.db, store.path, ModelIdentity.from_json(entry[key])))
    return models
