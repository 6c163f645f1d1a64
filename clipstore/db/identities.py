"""Model identities as a store records them, made usable where the store is now.

A store records the identity of the model that made its vectors in several places (schema metadata, the switch
history, fine-tuned model and head configs). A checkpoint inside the store is recorded relative to the store
folder; one outside it keeps its absolute path and SHA-256, and when it moves `clipstore model relink` records the
new place in the `model_locations` setting. `locate` turns a recorded identity into one whose checkpoint path
is valid here and now.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from clipstore.db import layout, tables
from clipstore.encoders.identity import ModelIdentity

if TYPE_CHECKING:
    import lancedb


def relinked(db: "lancedb.DBConnection") -> dict[str, str]:
    """The checkpoints the store was told about with `relink`: SHA-256 -> path (relative to the store when
    inside it)."""
    value = tables.read_setting(db, layout.LOCATIONS_SETTING)
    return json.loads(value) if value else {}


def locate(db: "lancedb.DBConnection", store_root: str, identity: ModelIdentity) -> ModelIdentity:
    """A model identity recorded in the store at `store_root`, with the checkpoint path it has here and now."""
    if not identity.checkpoint_path:
        return identity
    return identity.located(store_root, relinked(db))
