"""The `first_path` column of the images tables: each image's first stored path in sorted order, on its own row.

A search reports one path per image, the first of its paths in sorted order. Reading it from `files` costs a
second LanceDB query per search (~3-5 ms at a million rows, a third of an indexed search), so the writers keep
it on the image row as well (migration 0006), and an indexed search reads ids, vectors and paths in one query.

The invariant the writers keep: `first_path` is null (not known: a reader looks the paths up in `files`) or a
path whose bytes are the image's, and after every completed write it is the first of the image's stored paths.
The order of the writes keeps it true when a process is killed between them:
- a path about to hold other content, or about to be removed, is first replaced on its old image by the first
  of the paths that stay (or null), and only then rewritten or deleted in `files`;
- a path gained by an image is recorded in `files` first, then on the image row when it sorts first.
Rows written before migration 0006 hold null until `clipstore index --rebuild` (`fill_missing`) fills them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping

from clipstore.db import layout, tables

if TYPE_CHECKING:
    import lancedb


def has_column(images: "lancedb.table.Table") -> bool:
    """Whether `images` has the column (a store opened with `apply_migrations=False` may not yet)."""
    return layout.FIRST_PATH in images.schema.names


def first_of(paths: Iterable[str]) -> str | None:
    """The first of `paths` in sorted order (code point order, as `sorted` and the search's paths), or None."""
    return min(paths, default=None)


def write(images: "lancedb.table.Table", values: Mapping[str, str | None]) -> None:
    """Set `first_path` of the image rows with these ids (one commit; ids without a row are ignored)."""
    import pyarrow as pa

    if not values or not has_column(images):
        return
    rows = pa.table(
        {"id": pa.array(list(values), pa.string()), layout.FIRST_PATH: pa.array(list(values.values()), pa.string())}
    )
    images.merge_insert("id").when_matched_update_all().execute(rows)


def before_removing(
    db: "lancedb.DBConnection", images: "lancedb.table.Table", leaving: Mapping[str, Iterable[str]]
) -> None:
    """Before paths leave their images (deleted from `files`, or about to hold other content): set the first
    path of each image in `leaving` ({image id: its paths that go}) to the first of the paths that stay."""
    if not leaving or not has_column(images):
        return
    stored = tables.paths_by_image(db, leaving)
    write(images, {image_id: first_of(set(stored.get(image_id, ())) - set(gone)) for image_id, gone in leaving.items()})


def after_adding(
    db: "lancedb.DBConnection",
    images: "lancedb.table.Table",
    gained: Mapping[str, Iterable[str]],
    removed: Mapping[str, Iterable[str]] | None = None,
) -> None:
    """After `files` recorded paths for existing images ({image id: paths it gained}), and those in `removed`
    left theirs: set each such image's first path from its stored paths."""
    ids = set(gained) | set(removed or {})
    if not ids or not has_column(images):
        return
    stored = tables.paths_by_image(db, ids)
    write(images, {image_id: first_of(stored.get(image_id, ())) for image_id in ids})


def fill_missing(db: "lancedb.DBConnection", images: "lancedb.table.Table") -> int:
    """Fill `first_path` on every row that has none and whose image has a stored path (rows written before
    migration 0006); returns how many rows were filled. Reads the whole files table once."""
    if not has_column(images):
        return 0
    missing = set(tables.read_columns(images, ["id"], f"{layout.FIRST_PATH} IS NULL").column("id").to_pylist())
    if not missing:
        return 0
    stored = tables.paths_by_image(db)
    values = {image_id: first_of(stored[image_id]) for image_id in missing if image_id in stored}
    write(images, values)
    return len(values)


def check(db: "lancedb.DBConnection", images: "lancedb.table.Table") -> dict[str, tuple[str | None, str | None]]:
    """Rows whose `first_path` is set but is not the first of their stored paths: {id: (recorded, expected)}.
    Empty when the invariant holds (for tests and `clipstore doctor`-style checks)."""
    if not has_column(images):
        return {}
    stored = tables.paths_by_image(db)
    wrong = {}
    for row in tables.read_columns(images, ["id", layout.FIRST_PATH], f"{layout.FIRST_PATH} IS NOT NULL").to_pylist():
        expected = first_of(stored.get(row["id"], ()))
        if row[layout.FIRST_PATH] != expected:
            wrong[row["id"]] = (row[layout.FIRST_PATH], expected)
    return wrong
