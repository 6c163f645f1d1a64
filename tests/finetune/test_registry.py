"""The registry of fine-tuned models saved in a store (clipstore.finetune.registry): saving, listing, and
resolving an id, an id prefix, a folder or a model spec to the model to switch to — on a real store, with
models saved by `save_model` itself (a tiny torch module stands in for a fine-tuned open_clip model: the
registry only reads the files)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from clipstore.encoders.identity import file_sha256, resolve_model
from clipstore.errors import ModelSpecError
from clipstore.finetune.registry import finetuned_models, resolve_target, save_model


def _save(store, model_id: str, *, text_changed: bool, created_at: str, parent=None) -> str:
    torch.manual_seed(len(model_id))
    config = {
        "id": model_id,
        "parent": (parent or store.model).portable(store.path).to_dict(),
        "method": "2sft" if text_changed else "mcip",
        "text_encoder_changed": text_changed,
        "created_at": created_at,
    }
    return save_model(store.context, torch.nn.Linear(2, 2), model_id, config)


@pytest.fixture
def saved(store):
    """A store with three saved models: an MCIP and a 2SFT fine-tune of its model, and an MCIP fine-tune of
    another model; two of the ids share their first 9 characters."""
    folders = {
        "mcip": _save(store, "20240101-120000-aaaaaa", text_changed=False, created_at="2024-01-01T12:00:00"),
        "2sft": _save(store, "20240101-130000-bbbbbb", text_changed=True, created_at="2024-01-01T13:00:00"),
        "other": _save(store, "20240202-120000-cccccc", text_changed=False, created_at="2024-02-02T12:00:00",
                       parent=resolve_model("clipstore-mini:random")),
    }
    return store, folders


def test_saved_models_are_listed_newest_first_with_their_folder_and_weights_hash(saved):
    store, folders = saved
    models = finetuned_models(store.location)
    assert [m["id"] for m in models] == ["20240202-120000-cccccc", "20240101-130000-bbbbbb", "20240101-120000-aaaaaa"]
    assert [m["folder"] for m in models] == [folders["other"], folders["2sft"], folders["mcip"]]
    weights = os.path.join(folders["mcip"], "model.safetensors")
    assert models[-1]["model_sha256"] == file_sha256(weights)
    assert models[-1]["parent"]["spec"] == store.model.spec
    assert json.loads(open(os.path.join(folders["mcip"], "config.json")).read())["method"] == "mcip"
    assert not [name for name in os.listdir(os.path.dirname(folders["mcip"])) if name.endswith(".partial")]


def test_an_id_a_folder_or_a_long_enough_prefix_names_a_saved_model(saved):
    store, folders = saved
    weights = os.path.join(folders["mcip"], "model.safetensors")
    for name in ("20240101-120000-aaaaaa", folders["mcip"], "20240101-12"):
        identity, text_changed = resolve_target(store.context, name)
        assert identity.checkpoint_path == weights and identity.checkpoint_sha256 == file_sha256(weights)
        assert identity.architecture == store.model.architecture and identity.pretrained is None
        assert text_changed is False  # an MCIP fine-tune of the store's own model keeps its text encoder


def test_the_text_encoder_counts_as_changed_unless_an_mcip_tune_of_the_current_model(saved):
    store, _ = saved
    assert resolve_target(store.context, "20240101-130000-bbbbbb")[1] is True  # 2SFT re-aligned the text encoder
    assert resolve_target(store.context, "20240202")[1] is True  # MCIP, but of another model than the store's
    identity, text_changed = resolve_target(store.context, "clipstore-mini:random")  # a spec, not a saved model
    assert identity == resolve_model("clipstore-mini:random") and text_changed is True


def test_an_ambiguous_or_too_short_prefix_is_refused(saved):
    store, _ = saved
    with pytest.raises(ModelSpecError, match="matches 2 fine-tuned models of this store; give more of the id"):
        resolve_target(store.context, "20240101")
    with pytest.raises(ModelSpecError, match="Unknown model architecture"):  # under 6 characters: read as a spec
        resolve_target(store.context, "20240")
