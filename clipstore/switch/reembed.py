"""Safe model switch: re-embed every image with another model and switch atomically.

`reembed(store, model)` writes the new vectors into a staging table beside the current one
(`images__<key>`, `<key>` derived from the target model, so a re-run finds and resumes it), batch by batch.
Searches keep using the current table meanwhile. When every image has its new vector (and, when the text
encoder differs, every bank prompt its new CLIP text embedding, in `prompts__<key>`), the store switches with
ONE write of the `active_tables` setting; a crash at any point before that leaves the store exactly as it was,
and re-running resumes where the staging table stopped. A table that already holds the target's vectors (from
an interrupted run, from a switch that was rolled back, or the original `images` table when switching back to
the store's first model) is brought up to date and reused, so switching back and forth re-embeds only what
changed in between.

The switch keeps the previous state restorable (`switch.history` records and tags it; `switch.rollback`
undoes it). Model A heads trained on the old encoder become stale by construction: their base identity no
longer matches the store's model, and describe says so until they are retrained.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from clipstore.db import layout, tables
from clipstore.encoders.identity import ModelIdentity
from clipstore.errors import ClipstoreError, ReembedError  # ReembedError: importable from here as before
from clipstore.progress import silent
from clipstore.prompts.nearest import update_bank_index
from clipstore.results import FileFailure, _AsDict
from clipstore.switch.history import record_switch

if TYPE_CHECKING:
    from clipstore.db.context import StoreContext


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


def staging_names(target: ModelIdentity) -> dict[str, str]:
    key = hashlib.sha256(repr(target._key()).encode()).hexdigest()[:12]  # not the path: a moved store resumes
    return {"images": f"{layout.IMAGES}__{key}", "prompts": f"{layout.PROMPTS}__{key}"}


def reembed(
    store: "StoreContext",
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

    A table that already holds the target's vectors (left by an interrupted run, by an earlier switch that
    was rolled back, or the store's original table when switching back to its first model) is brought up to
    date instead of re-embedded: rows of images no longer in the store go, the other columns are copied
    afresh, and only the images it lacks are embedded.
    """
    import pyarrow as pa

    from clipstore.imaging import load_image

    report = progress or silent
    current = store.model
    if target.same_vectors_as(current):
        raise ReembedError(f"The store's vectors are already made by {target.spec}; there is nothing to re-embed.")
    if target.embed_dim != current.embed_dim and not text_changed:
        text_changed = True  # a different dimension cannot share the old text embeddings
    db = store.db
    active = tables.active_tables(db)
    names = {kind: _table_for(db, target, kind) for kind in ("images", "prompts")}
    if names["images"] == active["images"]:
        raise ReembedError(f"The store is already switched to {target.spec}.")
    staging, rows, done = _bring_up_to_date(db, active["images"], names["images"], "embedding", target, store.path)
    resumed = len(done)
    wanted = {row["id"] for row in rows}
    paths = tables.paths_by_image(db)

    encoder = store.encoder_for(target)
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
    if tables.table_exists(db, active["prompts"]):
        bank_model = tables.stored_model(db.open_table(active["prompts"]))
        # The bank's CLIP text embeddings stay when the target's text encoder made them (an MCIP fine-tune of
        # the current model, or a switch back to the model that made them).
        if text_changed and not (bank_model is not None and bank_model.same_vectors_as(target)):
            prompts_embedded = _reembed_prompts(db, active["prompts"], names["prompts"], target, encoder, store.path, report)
            new_active["prompts"] = names["prompts"]

    files_version = db.open_table(layout.FILES).version  # what a rollback restores: before any row is dropped
    if missing:
        dropped_ids = sorted(wanted - set(tables.read_columns(staging, ["id"]).column("id").to_pylist()))
        # Their file rows go too: when a file becomes readable again, the next ingest embeds it anew.
        tables.delete_where_in(db.open_table(layout.FILES), "image_id", dropped_ids)
    from clipstore.search.index import index_like

    index_like(db, db.open_table(active["images"]), db.open_table(new_active["images"]), report)  # before the switch
    tag = record_switch(store, active, new_active, current, target, files_version)
    return ReembedReport(target.spec, len(rows) - len(missing), embedded, resumed, prompts_embedded, tuple(missing), True, current.spec, tag)


def _table_for(db, target: ModelIdentity, kind: str) -> str:
    """The table to hold `target`'s vectors of this kind ("images" or "prompts"): the store's original table
    when the target made its vectors (a switch back to the first model), else the target's staging table."""
    original = layout.IMAGES if kind == "images" else layout.PROMPTS
    if tables.table_exists(db, original):
        recorded = tables.stored_model(db.open_table(original))
        if recorded is not None and recorded.same_vectors_as(target):
            return original
    return staging_names(target)[kind]


def _bring_up_to_date(db, source_name: str, name: str, column: str, target: ModelIdentity, store_root: str):
    """Open (or create) table `name` for `target`'s vectors in `column`, with the rows of `source_name`
    except their vectors in mind: rows the source no longer has are deleted, rows whose other columns changed
    get the source's values (their vectors stay valid: a row's vector depends only on its content), columns
    the source gained are added. Returns (table, the source's rows without `column`, ids already embedded)."""
    source = db.open_table(source_name)
    schema = layout.vectors_schema_like(source.schema, column, target, store_root)
    table = None
    if tables.table_exists(db, name):
        table = db.open_table(name)
        recorded = tables.stored_model(table)
        if recorded is None or not recorded.same_vectors_as(target) or table.schema.field(column).type != schema.field(column).type:
            db.drop_table(name)  # not the target's vectors after all: start afresh
            table = None
    if table is None:
        table = db.create_table(name, schema=schema)
    _add_columns(table, [field for field in schema if field.name not in table.schema.names])  # filled in below
    columns = [field.name for field in schema if field.name != column]
    rows = tables.read_columns(source, columns).to_pylist()
    wanted = {row["id"]: row for row in rows}
    present = tables.read_columns(table, columns).to_pylist()
    extra = sorted(row["id"] for row in present if row["id"] not in wanted)
    if extra:
        tables.delete_where_in(table, "id", extra)
    _update_rows(table, [wanted[row["id"]] for row in present if row["id"] in wanted and row != wanted[row["id"]]], columns)
    return table, rows, {row["id"] for row in present if row["id"] in wanted}


def carry_new_columns(db, source_name: str, name: str) -> None:
    """Give table `name` the columns that `source_name` has and it lacks (added by a migration while it was
    not in use), with the source's values for the rows both hold."""
    source, table = db.open_table(source_name), db.open_table(name)
    gained = [field for field in source.schema if field.name not in table.schema.names]
    if gained:
        _add_columns(table, gained)
        columns = ["id", *(field.name for field in gained)]
        _update_rows(table, tables.read_columns(source, columns).to_pylist(), columns)


def _add_columns(table, fields: list) -> None:
    """New nullable columns (null in the rows already there)."""
    import pyarrow as pa

    if fields:
        table.add_columns(pa.schema([field.with_nullable(True) for field in fields]))


def _update_rows(table, rows: list[dict], columns: list[str]) -> None:
    """Set `columns` of the rows with these ids to these values, in one commit; other columns and rows that
    `table` does not hold are left alone."""
    import pyarrow as pa

    if rows:
        schema = pa.schema([table.schema.field(name) for name in columns])
        table.merge_insert("id").when_matched_update_all().execute(pa.Table.from_pylist(rows, schema=schema))


def _reembed_prompts(db, source_name: str, name: str, target: ModelIdentity, encoder, store_root: str, report) -> int:
    import pyarrow as pa

    table, rows, done = _bring_up_to_date(db, source_name, name, "clip_embedding", target, store_root)
    todo = [row for row in rows if row["id"] not in done]
    chunk = 4096
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        vectors = encoder.encode_texts([row["text"] for row in part])
        records = [{**row, "clip_embedding": vector.tolist()} for row, vector in zip(part, vectors)]
        table.add(pa.Table.from_pylist(records, schema=table.schema))
        report("re-embed prompts", min(start + chunk, len(todo)), len(todo))
    update_bank_index(db, table, report)  # before the switch, so a large bank's searches stay indexed across it
    return len(todo)
