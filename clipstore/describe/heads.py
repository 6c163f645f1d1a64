"""Trained Model A heads saved in a store: files on disk plus one record each in `_clipstore_heads`.

A head lives in `<store>/heads/<id>/` (under the store's URI on object storage) as `model_a.safetensors` (the
FC/Norm layers, and the fine-tuned CLIP vision tower unless it was trained with --freeze-vision) and
`config.json` (the base CLIP identity, the architecture, the training hyper-parameters, the Model B parameters
and ensemble alpha chosen on the validation split, and the validation metrics). The record in
`_clipstore_heads` (written last, so a crash mid-save leaves no record) makes it visible (`save_head`); its
files are read through the store's `StoreLocation` (a local copy of the weights on object storage). `choose_head` picks the head `describe` and `eval`
use: the one asked for, else the newest one trained on the store's encoder; `load_head_model` rebuilds it.

A head only makes sense on top of the CLIP encoder it was trained with: loading one whose base identity differs
from the store's model raises ModelMismatchError.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from clipstore.db import tables
from clipstore.errors import HeadNotFoundError, ModelMismatchError
from clipstore.describe.model_b import KnnParams
from clipstore.db.identities import locate
from clipstore.encoders.identity import ModelIdentity
from clipstore.paths import join
from clipstore.results import _AsDict
from clipstore.db import layout

if TYPE_CHECKING:
    import lancedb

    from clipstore.db.context import StoreContext
    from clipstore.db.location import StoreLocation
    from clipstore.describe.model_a import ModelA

FORMAT_VERSION = 1


@dataclass(frozen=True)
class HeadInfo(_AsDict):
    """A saved Model A head: id, when it was made, its base CLIP model, its validation Avg-Cos (eq. 8; Model A's,
    the ensemble's and zero-shot CLIP's, NaN when not recorded) and the ensemble alpha (eq. 6) chosen for it;
    `stale` is true when the store's model is no longer its base."""

    id: str
    created_at: str
    folder: str
    base_model: dict[str, Any]
    validation_avg_cos: float
    ensemble_alpha: float
    knn: dict[str, Any]
    vision_tuned: bool
    stale: bool
    validation_ensemble: float = float("nan")
    validation_zero_shot: float = float("nan")

    @property
    def beats_zero_shot(self) -> bool:
        """Whether describe with this head (the ensemble) scored above zero-shot CLIP on its validation split."""
        return bool(self.validation_ensemble > self.validation_zero_shot)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with `beats_zero_shot`."""
        return {**super().to_dict(), "beats_zero_shot": self.beats_zero_shot}


@dataclass(frozen=True)
class HeadConfig:
    """Everything needed to rebuild a head and use it (the content of config.json)."""

    id: str
    base_model: ModelIdentity
    in_dim: int
    out_dim: int
    mix: float
    vision_tuned: bool
    ensemble_alpha: float
    knn: KnnParams
    hyper_parameters: dict[str, Any]
    validation: dict[str, Any]
    created_at: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT_VERSION,
                "id": self.id,
                "base_model": self.base_model.to_dict(),
                "architecture": {"in_dim": self.in_dim, "out_dim": self.out_dim, "mix": self.mix},
                "vision_tuned": self.vision_tuned,
                "ensemble_alpha": self.ensemble_alpha,
                "knn": self.knn.to_dict(),
                "hyper_parameters": self.hyper_parameters,
                "validation": self.validation,
                "created_at": self.created_at,
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> "HeadConfig":
        data = json.loads(text)
        arch = data["architecture"]
        return cls(
            data["id"],
            ModelIdentity.from_dict(data["base_model"]),
            int(arch["in_dim"]),
            int(arch["out_dim"]),
            float(arch["mix"]),
            bool(data["vision_tuned"]),
            float(data["ensemble_alpha"]),
            KnnParams.from_dict(data["knn"]),
            dict(data.get("hyper_parameters", {})),
            dict(data.get("validation", {})),
            str(data.get("created_at", "")),
        )


def list_heads(db: "lancedb.DBConnection", location: "StoreLocation", store_model: ModelIdentity) -> list[HeadInfo]:
    """Every recorded head of the store at `location`, newest first."""
    store_path = location.root
    if not tables.table_exists(db, layout.HEADS_TABLE):
        return []
    rows = tables.read_columns(db.open_table(layout.HEADS_TABLE), layout.heads_schema().names).to_pylist()
    rows.sort(key=lambda row: (row["created_at"], row["id"]), reverse=True)
    infos = []
    for row in rows:
        config = HeadConfig.from_json(row["config"])
        base = locate(db, store_path, config.base_model)
        infos.append(
            HeadInfo(
                row["id"],
                row["created_at"].isoformat(),
                location.join(row["folder"]),
                base.to_dict(),
                float(row["validation_avg_cos"]),
                float(row["ensemble_alpha"]),
                config.knn.to_dict(),
                config.vision_tuned,
                not base.same_vectors_as(store_model),
                float(config.validation.get("ensemble", float("nan"))),
                float(config.validation.get("zero_shot", float("nan"))),
            )
        )
    return infos


def record_head(db: "lancedb.DBConnection", location: "StoreLocation", config: HeadConfig, folder: str) -> None:
    """Make a saved head folder visible (the last step of saving a head)."""
    import pyarrow as pa
    from datetime import datetime

    table = db.create_table(layout.HEADS_TABLE, schema=layout.heads_schema(), exist_ok=True)
    row = {
        "id": config.id,
        "created_at": datetime.fromisoformat(config.created_at),
        "folder": location.relative(folder),
        "base_model": config.base_model.to_json(),
        "validation_avg_cos": float(config.validation.get("model_a", float("nan"))),
        "ensemble_alpha": config.ensemble_alpha,
        "config": config.to_json(),
    }
    table.add(pa.Table.from_pylist([row], schema=layout.heads_schema()))


def resolve_head(
    db: "lancedb.DBConnection", location: "StoreLocation", store_model: ModelIdentity, head: str | os.PathLike[str]
) -> str:
    """The folder of a head given by id (or id prefix) in this store, or by the path of a local head folder."""
    store_path = location.root
    candidate = os.path.expanduser(os.fspath(head))
    if os.path.isdir(candidate):
        return os.path.abspath(candidate)
    matches = [info for info in list_heads(db, location, store_model) if info.id.startswith(str(head))]
    if len(matches) == 1:
        return matches[0].folder
    if not matches:
        raise HeadNotFoundError(
            f"No Model A head {str(head)!r} in the store at {store_path}. List the heads with `clipstore heads`, "
            "or pass the path of a head folder."
        )
    raise HeadNotFoundError(f"{str(head)!r} matches {len(matches)} heads; give more of the id.")


def read_config(location: "StoreLocation", folder: str) -> HeadConfig:
    """The config of the head in `folder` (in the store at `location`, or a local folder), its base model
    located in that store."""
    path = join(folder, layout.CONFIG_FILE)
    try:
        config = HeadConfig.from_json(location.read_text(path))
        return replace(config, base_model=config.base_model.located(location.root))
    except FileNotFoundError as exc:
        raise HeadNotFoundError(f"{folder} is not a Model A head folder (no {layout.CONFIG_FILE}).") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise HeadNotFoundError(f"The head config {path} cannot be read ({exc}). Retrain with `clipstore train`.") from exc


def check_base(config: HeadConfig, store_model: ModelIdentity, folder: str) -> None:
    """Refuse a head trained on another CLIP encoder than the store's."""
    if not config.base_model.same_vectors_as(store_model):
        raise ModelMismatchError(
            f"The Model A head {config.id} ({folder}) was trained on {config.base_model.spec} (weights "
            f"{config.base_model.weights_label}), but this store's images are embedded with {store_model.spec} "
            f"(weights {store_model.weights_label}). A head only works on its own base encoder: retrain it on "
            "this store with `clipstore train`."
        )


@dataclass(frozen=True)
class HeadChoice:
    """The head to use (config and folder, None when there is none) and, when the newest recorded head was
    skipped because it was trained on another encoder, that head (`stale_newest`)."""

    config: HeadConfig | None
    folder: str | None
    stale_newest: HeadInfo | None = None


def choose_head(store: "StoreContext", head: str | os.PathLike[str] | None = None) -> HeadChoice:
    """The head `describe` and `eval` use: `head` (an id, id prefix or head folder), refused with
    ModelMismatchError when trained on another encoder; else the newest head trained on the store's encoder."""
    if head is not None:
        folder = resolve_head(store.db, store.location, store.model, head)
        config = read_config(store.location, folder)
        check_base(config, store.model, folder)
        return HeadChoice(config, folder)
    infos = list_heads(store.db, store.location, store.model)
    usable = [info for info in infos if not info.stale]
    stale_newest = infos[0] if infos and infos[0].stale else None
    if not usable:
        return HeadChoice(None, None, stale_newest)
    return HeadChoice(read_config(store.location, usable[0].folder), usable[0].folder, stale_newest)


def save_head(store: "StoreContext", model: "ModelA", config: HeadConfig) -> str:
    """Save a trained head under `heads/<id>/` (weights and config.json, atomically), then record it; returns
    its folder."""
    from clipstore.db.locking import write_lock
    from clipstore.describe.model_a import save_weights

    final = store.location.join(layout.HEADS_FOLDER, config.id)
    with store.location.saved_folder(final) as folder:
        save_weights(model, folder)
        with open(os.path.join(folder, layout.CONFIG_FILE), "w", encoding="utf-8") as handle:
            handle.write(config.to_json())
    with write_lock(store.location):
        record_head(store.db, store.location, config, final)
    return final


def load_head_model(store: "StoreContext", folder: str, config: HeadConfig) -> "ModelA":
    """Rebuild a saved head's Model A (in eval mode, fp32), with a fresh vision tower of the store's architecture
    under its weights when the head fine-tuned the tower."""
    from clipstore.describe.model_a import load_weights

    visual = None
    if config.vision_tuned:
        from clipstore.encoders.clip import vision_tower

        visual = vision_tower(store.loadable(store.model))
    weights = store.location.local_copy(join(folder, layout.HEAD_WEIGHTS_FILE))
    return load_weights(weights, in_dim=config.in_dim, out_dim=config.out_dim, mix=config.mix, visual=visual)
