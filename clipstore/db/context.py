"""What feature code gets from a store: where it is (its folder or object-store URI, and its plain files), its
LanceDB connection, the identity of the model that made its current vectors, and the encoders — never the whole
`Store`.

`clipstore.store.facade.Store` builds one `StoreContext` and hands it to ingest, the prompt bank, describe,
fine-tuning and the model switch; those modules import nothing of the facade, so the facade is the only place
that knows every feature and nothing imports it back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

from clipstore.db import tables
from clipstore.db.identities import locate
from clipstore.db.location import StoreLocation
from clipstore.encoders.identity import ModelIdentity
from clipstore.paths import is_uri

if TYPE_CHECKING:
    import lancedb
    import numpy as np

    from clipstore.encoders.clip import ClipEncoder
    from clipstore.encoders.minilm import MiniLMEncoder
    from clipstore.encoders.torch_tower import TorchVisionTower


class StoreContext:
    """A store as feature code sees it.

    location: where the store is, and its plain files (heads, fine-tuned models; `StoreLocation`). path: the
    store folder or object-store URI (`location.root`). db: its LanceDB connection. model: the identity of the
    model that made the current vectors (follows a re-embed switch made by this or another process). encoder /
    minilm: the loaded encoders (on first use, shared in the process). device, precision: where and how models
    run.
    """

    def __init__(self, location: StoreLocation, db: "lancedb.DBConnection", model: ModelIdentity, *, device: str | None, precision: str):
        self.location = location
        self.path = location.root
        self.db = db
        self.device = device
        self.precision = precision
        self._model = model
        self._active = tables.ActiveTables(db)
        self._model_table = self._active.names()["images"]

    @property
    def model(self) -> ModelIdentity:
        """The identity of the model that made the store's current vectors, located in this store folder."""
        current = self._active.names()["images"]
        if current != self._model_table:
            stored = tables.stored_model(self.db.open_table(current))
            if stored is not None:
                self._model = locate(self.db, self.path, stored)
            self._model_table = current
        return self._model

    def forget_model(self) -> None:
        """Read and locate the model identity again on next use (after a relink changed where it is)."""
        self._model_table = None

    @property
    def encoder(self) -> "ClipEncoder":
        """The store's CLIP encoder (loaded on first use, shared across stores in this process)."""
        return self.encoder_for(self.model)

    @property
    def image_embedder(self) -> "ClipEncoder | TorchVisionTower":
        """What ingest embeds images with: the model's cached vision tower run by torch when this machine has it
        (no open_clip import; `clipstore.encoders.torch_tower`), else the encoder."""
        from clipstore.encoders.torch_tower import load_image_embedder

        return load_image_embedder(self.loadable(self.model), device=self.device, precision=self.precision)

    def encoder_for(self, identity: ModelIdentity) -> "ClipEncoder":
        """The CLIP encoder of another model (a re-embed target, a fine-tuned model), on this store's device."""
        from clipstore.encoders.clip import load_clip_encoder

        return load_clip_encoder(self.loadable(identity), device=self.device, precision=self.precision)

    def loadable(self, identity: ModelIdentity) -> ModelIdentity:
        """`identity` with a checkpoint that can be loaded here: one saved in this store on object storage
        (`models/<id>/model.safetensors`) becomes its local copy (downloaded once into clipstore's cache; its
        SHA-256 is checked when the model is built); any other is returned as it is."""
        path = identity.checkpoint_path
        if not path or not is_uri(path) or not path.startswith(self.path + "/"):
            return identity
        return replace(identity, checkpoint_path=self.location.local_copy(path))

    def embed_queries(self, kind: str, queries: "Sequence[Any]") -> "np.ndarray":
        """Search queries -> (n, embed_dim) float32, L2-normalised, in the store's model's space: texts for
        kind "text", PIL images for "vision". The model's numpy tower embeds them when it is cached on this
        machine (no torch or open_clip import: a cold search costs little more than its query), else the full
        encoder, whose loading caches the tower (`clipstore.encoders.tower_cache`)."""
        from clipstore.encoders.tower_cache import encode_query

        return encode_query(kind, self.model, queries, lambda: self.encoder)

    @property
    def minilm(self) -> "MiniLMEncoder":
        """The all-MiniLM-L6-v2 sentence encoder (loaded on first use, shared in this process)."""
        from clipstore.encoders.minilm import load_minilm_encoder

        return load_minilm_encoder(device=self.device if self.device and self.device != "auto" else None)
