"""The fine-tuned models saved in a store (`models/<id>/`: `model.safetensors` + `config.json`, in the store's
folder or under its object-store URI): saving one, listing them, the identity of one, and resolving what a user
names (an id, an id prefix of at least 6 characters, a model folder, or any model spec) to the identity to
switch to."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from clipstore.db import layout
from clipstore.db.identities import relinked
from clipstore.encoders.identity import ModelIdentity, file_sha256, resolve_model
from clipstore.errors import ModelSpecError
from clipstore.finetune.metrics import validation_improved
from clipstore.paths import is_uri, join

if TYPE_CHECKING:
    from clipstore.db.context import StoreContext
    from clipstore.db.location import StoreLocation


def save_model(store: "StoreContext", model, model_id: str, config: dict[str, Any]) -> str:
    """Save the whole open_clip `model` and its `config` as `models/<model_id>/` (atomically); returns the folder."""
    from safetensors.torch import save_file

    final = store.location.join(layout.MODELS_FOLDER, model_id)
    with store.location.saved_folder(final) as folder:
        state = {name: tensor.detach().float().contiguous().cpu() for name, tensor in model.state_dict().items()}
        save_file(state, os.path.join(folder, layout.MODEL_WEIGHTS_FILE))
        config["model_sha256"] = file_sha256(os.path.join(folder, layout.MODEL_WEIGHTS_FILE))
        with open(os.path.join(folder, layout.CONFIG_FILE), "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
    return final


def finetuned_models(location: "StoreLocation", relinked: dict[str, str] | None = None) -> list[dict]:
    """The fine-tuned models saved in the store at `location` (their config.json contents plus `folder`), newest
    first, each with `validation` {metric, before, after, improved}; the `parent` identity is located in the store (`ModelIdentity.located`, with the store's relinks). A
    folder without config.json (a save that did not finish) is skipped."""
    root = location.join(layout.MODELS_FOLDER)
    found = []
    for name in location.entries(root):
        config = join(root, name, layout.CONFIG_FILE)
        if not name.startswith(".") and not name.endswith(".partial") and location.is_file(config):
            data = json.loads(location.read_text(config))
            data["folder"] = join(root, name)
            data["parent"] = ModelIdentity.from_dict(data["parent"]).located(location.root, relinked).to_dict()
            validation = data.setdefault("validation", {})
            if "improved" not in validation:  # saved before the flag was recorded
                validation["improved"] = validation_improved(float(validation.get("before", "nan")), float(validation.get("after", "nan")))
            found.append(data)
    found.sort(key=lambda data: data.get("created_at", ""), reverse=True)
    return found


def finetuned_identity(parent: ModelIdentity, checkpoint: str, sha256: str | None = None) -> ModelIdentity:
    """The identity of a fine-tuned checkpoint (a local path, or a URI in a store on object storage, then with
    its recorded `sha256`): the parent's architecture and preprocessing, new weights."""
    if is_uri(checkpoint):
        return replace(parent, pretrained=None, checkpoint_path=checkpoint, checkpoint_sha256=sha256)
    path = os.path.abspath(checkpoint)
    return replace(parent, pretrained=None, checkpoint_path=path, checkpoint_sha256=file_sha256(path))


def resolve_target(store: "StoreContext", model: str) -> tuple[ModelIdentity, bool]:
    """The identity `model` names and whether its text encoder differs from the store's current one.

    model: a fine-tuned model of the store (its id, an id prefix of at least 6 characters, or its folder),
    else any model spec (`resolve_model`). An MCIP fine-tune of the store's current model keeps its text
    encoder (False); anything else counts as a new text encoder (True). A prefix matching several saved
    models raises ModelSpecError.
    """
    saved = finetuned_models(store.location, relinked(store.db))
    named = model.rstrip("/") if is_uri(model) else os.path.abspath(os.path.expanduser(model))
    exact = [c for c in saved if model == c.get("id") or named == c["folder"]]
    prefixed = [c for c in saved if len(model) >= 6 and str(c.get("id", "")).startswith(model)]
    if not exact and len(prefixed) > 1:
        raise ModelSpecError(f"{model!r} matches {len(prefixed)} fine-tuned models of this store; give more of the id.")
    for config in exact or prefixed:
        parent = ModelIdentity.from_dict(config["parent"])  # located by finetuned_models
        identity = finetuned_identity(parent, join(config["folder"], layout.MODEL_WEIGHTS_FILE), config.get("model_sha256"))
        keeps_text = not config.get("text_encoder_changed", True) and parent.same_vectors_as(store.model)
        return identity, not keeps_text
    return resolve_model(model), True
