"""Safe model switch: re-embed every image with another model, switch atomically, roll back on demand.

`reembed(store, model)` writes the new vectors into a staging table beside the current one
(`images__<key>`, `<key>` derived from the target model, so a re-run finds and resumes it), batch by batch.
Searches keep using the current table meanwhile. When every image has its new vector (and, when the text
encoder differs, every bank prompt its new CLIP text embedding, in `prompts__<key>`), the store switches with
ONE write of the `active_tables` setting; a crash at any point before that leaves the store exactly as it was,
and re-running resumes where the staging table stopped.

The switch keeps the previous state restorable: the old tables are left untouched, the files table version at
the switch is tagged (a Lance tag `clipstore-switch-<n>`), and the previous pointer is pushed on a history
stack. `rollback(store)` restores the files table to that tagged version and points the store back at the
old tables; images ingested after the switch are forgotten by the rollback (a later ingest adds them again).

Model A heads trained on the old encoder become stale by construction: their base identity no longer matches
the store's model, and describe says so until they are retrained.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from . import tables
from .errors import ClipstoreError
from .models import ModelIdentity
from .results import FileFailure, _AsDict

if TYPE_CHECKING:
    from .store import Store

HISTORY_SETTING = "model_history"
SWITCH_TAG = "clipstore-switch-{n}"


class ReembedError(ClipstoreError):
    """A re-embed cannot finish (e.g. image files are missing) or there is nothing to roll back to."""


@dataclass(frozen=True)
class ReembedReport(_AsDict):
    """What a re-embed did: the target model, how many images it embedded in this run and in earlier
    (interrupted) runs, whether the prompt bank's CLIP embeddings were redone, and whether the store switched."""

    model: str
    images: int
    embedded: int
    resumed: int
    prompts_embedded: int
    dropped: tuple[FileFailure, ...] = field(default_factory=tuple)
    switched: bool = False
    previous_model: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class RollbackReport(_AsDict):
    model: str
    previous_model: str
    files_version: int
    tag: str


def staging_names(target: ModelIdentity) -> dict[str, str]:
    key = hashlib.sha256(repr(target._key()).encode()).hexdigest()[:12]  # not the path: a moved store resumes
    return {"images": f"{tables.IMAGES}__{key}", "prompts": f"{tables.PROMPTS}__{key}"}


def reembed(
    store: "Store",
    target: ModelIdentity,
    *,
    text_changed: bool = True,
    drop_missing: bool = False,
    batch_size: int = 32,
    progress: Callable[[str, int, int], None] | None = None,
) -> ReembedReport:
    """Re-embed the store with `target` and switch to it (the caller holds the store's write lock).

    text_changed: whether the target's text encoder differs from the current one (False for an MCIP
    fine-tune of the current model: the bank's CLIP text embeddings stay valid and are kept).
    drop_missing: images whose files can no longer be read are left out of the new table (listed in
    `dropped`) instead of stopping the switch.
    """
    import pyarrow as pa

    from .encoders.clip import load_clip_encoder
    from .imaging import load_image

    report = progress or (lambda stage, done, total: None)
    current = store.model
    if target.same_vectors_as(current):
        raise ReembedError(f"The store's vectors are already made by {target.spec}; there is nothing to re-embed.")
    if target.embed_dim != current.embed_dim and not text_changed:
        text_changed = True  # a different dimension cannot share the old text embeddings
    db = store.db
    active = tables.active_tables(db)
    names = staging_names(target)
    if names["images"] == active["images"]:
        raise ReembedError(f"The store is already switched to {target.spec}.")
    source = db.open_table(active["images"])
    staging = db.create_table(names["images"], schema=tables.images_schema(target), exist_ok=True)

    columns = [name for name in source.schema.names if name != "embedding"]
    rows = tables.read_columns(source, columns).to_pylist()
    wanted = {row["id"] for row in rows}
    done = set(tables.read_columns(staging, ["id"]).column("id").to_pylist())
    extra = sorted(done - wanted)  # removed from the store since an interrupted run: not to be carried over
    if extra:
        tables.delete_where_in(staging, "id", extra)
        done -= set(extra)
    resumed = len(done)
    paths: dict[str, list[str]] = {}
    for row in tables.read_columns(db.open_table(tables.FILES), ["path", "image_id"]).to_pylist():
        paths.setdefault(row["image_id"], []).append(row["path"])

    encoder = load_clip_encoder(target, device=store._device, precision=store._precision)
    todo = [row for row in rows if row["id"] not in done]
    missing: list[FileFailure] = []
    batch: list[tuple[dict, object]] = []
    embedded = 0

    def flush() -> None:
        nonlocal embedded, batch
        if not batch:
            return
        vectors = encoder.encode_images([image for _, image in batch])
        records = [{**row, "embedding": vector.tolist()} for (row, _), vector in zip(batch, vectors)]
        staging.add(pa.Table.from_pylist(records, schema=staging.schema))  # one commit per batch
        embedded += len(batch)
        batch = []

    for position, row in enumerate(todo, start=1):
        image, reasons = None, []
        for path in sorted(paths.get(row["id"], ())):
            try:
                image = load_image(path, min_side=target.decode_min_side).image
                break
            except (ClipstoreError, OSError) as exc:
                reasons.append(f"{path}: {exc}")
        if image is None:
            where = "; ".join(reasons) or "no file of the store points at it"
            missing.append(FileFailure(sorted(paths.get(row["id"], ["(no path)"]))[0], f"cannot be read for re-embedding ({where})"))
        else:
            batch.append((row, image))
            if len(batch) >= batch_size:
                flush()
        report("re-embed images", position, len(todo))
    flush()
    if missing and not drop_missing:
        raise ReembedError(
            f"{len(missing)} stored images cannot be re-embedded because their files cannot be read (first: "
            f"{missing[0].path}). The store still uses {current.spec}; the {embedded + resumed} images embedded so "
            "far are kept for the next run. Restore the files, or pass --drop-missing to leave those images out."
        )

    prompts_embedded = 0
    new_active = {"images": names["images"], "prompts": active["prompts"]}
    if text_changed and tables.table_exists(db, active["prompts"]):
        prompts_embedded = _reembed_prompts(db, active["prompts"], names["prompts"], target, encoder, report)
        new_active["prompts"] = names["prompts"]

    if missing:
        dropped_ids = sorted(wanted - set(tables.read_columns(staging, ["id"]).column("id").to_pylist()))
        # Their file rows go too: when a file becomes readable again, the next ingest embeds it anew.
        tables.delete_where_in(db.open_table(tables.FILES), "image_id", dropped_ids)
    tag = _switch(store, active, new_active, current, target)
    return ReembedReport(target.spec, len(rows) - len(missing), embedded, resumed, prompts_embedded, tuple(missing), True, current.spec, tag)


def _reembed_prompts(db, source_name: str, staging_name: str, target: ModelIdentity, encoder, report) -> int:
    import pyarrow as pa

    source = db.open_table(source_name)
    staging = db.create_table(staging_name, schema=tables.prompts_schema(target), exist_ok=True)
    columns = [name for name in source.schema.names if name != "clip_embedding"]
    rows = tables.read_columns(source, columns).to_pylist()
    wanted = {row["id"] for row in rows}
    done = set(tables.read_columns(staging, ["id"]).column("id").to_pylist())
    extra = sorted(done - wanted)
    if extra:
        tables.delete_where_in(staging, "id", extra)
    todo = [row for row in rows if row["id"] not in done]
    chunk = 4096
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        vectors = encoder.encode_texts([row["text"] for row in part])
        records = [{**row, "clip_embedding": vector.tolist()} for row, vector in zip(part, vectors)]
        staging.add(pa.Table.from_pylist(records, schema=staging.schema))
        report("re-embed prompts", min(start + chunk, len(todo)), len(todo))
    return len(todo)


def history(db) -> list[dict]:
    value = tables.read_setting(db, HISTORY_SETTING)
    return json.loads(value) if value else []


def _switch(store: "Store", old: dict, new: dict, current: ModelIdentity, target: ModelIdentity) -> str:
    """Point the store at the new tables in one commit, after tagging what a rollback needs."""
    import pyarrow as pa

    db = store.db
    entries = history(db)
    tag = SWITCH_TAG.format(n=len(entries) + 1)
    files = db.open_table(tables.FILES)
    _tag(files, tag, files.version)
    _tag(db.open_table(old["images"]), tag, db.open_table(old["images"]).version)
    entries.append(
        {
            "tag": tag,
            "previous": old,
            "previous_model": current.to_json(),
            "files_version": files.version,
            "switched_to": new,
            "model": target.to_json(),
            "switched_at": tables.utc_now().isoformat(),
        }
    )
    rows = pa.table(
        {"key": [tables.ACTIVE_SETTING, HISTORY_SETTING], "value": [json.dumps(new), json.dumps(entries)]},
        schema=tables.settings_schema(),
    )
    settings = db.create_table(tables.SETTINGS, schema=tables.settings_schema(), exist_ok=True)
    settings.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(rows)  # the switch
    return tag


def rollback(store: "Store") -> RollbackReport:
    """Return the store to its state before the last switch (the caller holds the write lock).

    Two commits: the files table is restored first, then the pointer. If a crash falls between them, running
    rollback again completes it (the history entry is removed only by the second commit).
    """
    import pyarrow as pa

    db = store.db
    entries = history(db)
    if not entries:
        raise ReembedError("This store has never been switched to another model: there is nothing to roll back.")
    last = entries[-1]
    names = tables.table_names(db)
    if last["previous"]["images"] not in names:
        raise ReembedError(f"The previous images table {last['previous']['images']!r} is gone; cannot roll back.")
    files = db.open_table(tables.FILES)
    if files.version != last["files_version"]:
        try:
            files.restore(last["files_version"])  # the file rows as they were at the switch
        except Exception as exc:  # noqa: BLE001 - Lance raises several kinds for a cleaned-up version
            raise ReembedError(
                f"Cannot restore the files table to version {last['files_version']} ({exc}); was it removed by a "
                "version cleanup? The store is unchanged."
            ) from exc
    rows = pa.table(
        {"key": [tables.ACTIVE_SETTING, HISTORY_SETTING], "value": [json.dumps(last["previous"]), json.dumps(entries[:-1])]},
        schema=tables.settings_schema(),
    )
    db.open_table(tables.SETTINGS).merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(rows)
    previous = ModelIdentity.from_json(last["previous_model"])
    switched = ModelIdentity.from_json(last["model"])
    return RollbackReport(previous.spec, switched.spec, int(last["files_version"]), last["tag"])


def _tag(table, name: str, version: int) -> None:
    """A Lance tag on a table version (best effort: older Lance versions without tags still roll back)."""
    try:
        existing = table.tags.list()
        if name in existing:
            table.tags.delete(name)
        table.tags.create(name, version)
    except (AttributeError, NotImplementedError, ValueError, OSError, RuntimeError):
        pass

