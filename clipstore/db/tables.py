"""Small LanceDB helpers shared by the store, its features and the migrations (names and schemas: `layout`).

The tables are plain LanceDB tables; an application can open the current ones with
`tables.open_images(lancedb.connect(store_path))` (after a model switch the current vectors live in
`images__<key>`, see `clipstore.switch.reembed`). The model identity that made the `embedding` column
lives in the `images` table's schema metadata under `clipstore.model` (JSON).
"""

from __future__ import annotations

import weakref
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable, Iterator

from clipstore.db.layout import ACTIVE_SETTING, FILES, IMAGES, MODEL_METADATA_KEY, PROMPTS, SETTINGS, settings_schema
from clipstore.encoders.identity import ModelIdentity

if TYPE_CHECKING:
    import lance
    import lancedb
    import numpy as np
    import pyarrow as pa

    from clipstore.results import ImageRecord



def active_tables(db: "lancedb.DBConnection") -> dict[str, str]:
    """The names of the tables that hold the store's current vectors: {"images": ..., "prompts": ...}.

    They are `images` and `prompts` until a re-embed switches the store to another model's tables (see
    `clipstore.switch.reembed`); the switch is one write of this setting, so readers see either the old tables or
    the new ones, never a mix.
    """
    import json

    value = read_setting(db, ACTIVE_SETTING)
    names = {"images": IMAGES, "prompts": PROMPTS}
    if value:
        names.update(json.loads(value))
    return names


class ActiveTables:
    """`active_tables(db)` for a long-lived reader: read again only when the settings table changes (a version
    check costs ~0.1 ms; reading the setting a few ms), with the tables kept open (the connection makes every
    read of an open table see the latest commit)."""

    def __init__(self, db: "lancedb.DBConnection"):
        self._db = db
        self._settings: "lancedb.table.Table | None" = None
        self._names: tuple[int, dict[str, str]] | None = None
        self._opened: dict[str, "lancedb.table.Table"] = {}

    def names(self) -> dict[str, str]:
        if self._settings is None:
            if not table_exists(self._db, SETTINGS):
                return active_tables(self._db)
            self._settings = self._db.open_table(SETTINGS)
        version = self._settings.version
        if self._names is None or self._names[0] != version:
            self._names = (version, active_tables(self._db))
        return self._names[1]

    def open(self, kind: str) -> "lancedb.table.Table":
        """The current table of `kind` ("images" or "prompts"), kept open."""
        return self._table(self.names()[kind])

    def version(self, name: str) -> int:
        """The latest version of table `name` (kept open), or -1 while the store has no such table."""
        if name not in self._opened and not table_exists(self._db, name):
            return -1
        return self._table(name).version

    def table(self, name: str) -> "lancedb.table.Table":
        """Table `name` (any table of the store, e.g. `files`), kept open."""
        return self._table(name)

    def _table(self, name: str) -> "lancedb.table.Table":
        if name not in self._opened:
            self._opened[name] = self._db.open_table(name)
        return self._opened[name]


def open_images(db: "lancedb.DBConnection") -> "lancedb.table.Table":
    """The store's current images table."""
    return db.open_table(active_tables(db)["images"])


def open_prompts(db: "lancedb.DBConnection") -> "lancedb.table.Table":
    """The store's current prompt bank table."""
    return db.open_table(active_tables(db)["prompts"])


def has_prompts(db: "lancedb.DBConnection") -> bool:
    return active_tables(db)["prompts"] in table_names(db)


def read_setting(db: "lancedb.DBConnection", key: str) -> str | None:
    """A store setting (JSON text), or None when unset."""
    if not table_exists(db, SETTINGS):
        return None
    table = db.open_table(SETTINGS)
    rows = table.search().where(sql_in("key", [key])).select(["value"]).limit(None).to_arrow().to_pylist()
    return rows[0]["value"] if rows else None


def write_setting(db: "lancedb.DBConnection", key: str, value: str) -> None:
    write_settings(db, {key: value})


def write_settings(db: "lancedb.DBConnection", values: dict[str, str]) -> None:
    """Several settings (JSON text) in ONE commit: readers see all of them changed, or none."""
    import pyarrow as pa

    table = db.create_table(SETTINGS, schema=settings_schema(), exist_ok=True)
    rows = pa.table({"key": list(values), "value": list(values.values())}, schema=settings_schema())
    table.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(rows)


def table_names(db: "lancedb.DBConnection") -> set[str]:
    """Names of every table in the database (all pages of `list_tables`)."""
    names: set[str] = set()
    page_token = None
    while True:
        response = db.list_tables(page_token=page_token)
        names.update(response.tables)
        page_token = response.page_token
        if not page_token or not response.tables:
            return names


def table_exists(db: "lancedb.DBConnection", name: str) -> bool:
    return name in table_names(db)


def stored_model(table: "lancedb.table.Table") -> ModelIdentity | None:
    """The model identity recorded in a table's schema metadata, or None (as recorded: to use it, locate it
    with `clipstore.db.identities.locate`)."""
    metadata = table.schema.metadata or {}
    raw = metadata.get(MODEL_METADATA_KEY)
    return ModelIdentity.from_json(raw.decode()) if raw else None


def read_columns(table: "lancedb.table.Table", columns: list[str], where: str | None = None) -> "pa.Table":
    """All rows of `table` (those matching the SQL filter `where`, when given), only the named columns."""
    query = table.search()
    if where is not None:
        query = query.where(where)
    return query.select(columns).limit(None).to_arrow()


_DATASETS: "dict[tuple[str, int], lance.LanceDataset]" = {}
DATASETS_KEPT = 16
"""Lance datasets kept open by `lance_dataset`, the latest version of each table only (opening one costs ~9 ms; a
query through it ~1.5 ms less than the same query through lancedb's wrapper)."""
_URIS: "weakref.WeakKeyDictionary[lancedb.table.Table, str]" = weakref.WeakKeyDictionary()


def lance_dataset(table: "lancedb.table.Table") -> "lance.LanceDataset":
    """The Lance dataset behind `table` at its latest version, kept open per (table, version): for the hot read
    paths (an indexed search, the paths of its hits), where lancedb's query wrapper costs more than the query.
    Costs one version check of `table` (~0.3 ms) when the dataset is open already."""
    uri = _URIS.get(table)
    if uri is None:
        uri = _URIS[table] = table.uri  # a table's location never changes; asking lancedb costs ~0.3 ms
    key = (uri, table.version)
    dataset = _DATASETS.get(key)
    if dataset is None:
        dataset = table.to_lance()
        for stale in [k for k in _DATASETS if k[0] == uri]:  # older versions: their caches would pile up
            del _DATASETS[stale]
        if len(_DATASETS) >= DATASETS_KEPT:
            _DATASETS.pop(next(iter(_DATASETS)))
        _DATASETS[key] = dataset
    return dataset


def vector_matrix(column: "pa.ChunkedArray | pa.Array") -> "np.ndarray":
    """A fixed-size-list vector column as a float32 matrix of shape (rows, dim)."""
    import numpy as np
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    dim = column.type.list_size
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(len(column), dim)


def paths_by_image(
    db: "lancedb.DBConnection",
    ids: Iterable[str] | None = None,
    prefix: str | None = None,
    *,
    files: "lancedb.table.Table | None" = None,
) -> dict[str, list[str]]:
    """Every stored path of every image id (several paths share an id when their bytes are identical), each
    list sorted; with `ids`, only the file rows of those ids are read, through the Lance dataset (ids without a
    file row are absent); with `prefix`, only paths starting with it (`prefix_filter`). `files`: the store's
    files table when the caller keeps it open."""
    grouped: dict[str, list[str]] = {}
    if ids is not None:
        ids = set(ids)
        if not ids:
            return grouped
    files = files if files is not None else db.open_table(FILES)
    under = [prefix_filter("path", prefix)] if prefix is not None else []
    for by_id in _chunked_filters("image_id", ids, 1000) if ids is not None else [None]:
        filters = ([by_id] if by_id is not None else []) + under
        where = " AND ".join(f"({f})" for f in filters) if filters else None
        if by_id is None:
            rows = read_columns(files, ["path", "image_id"], where)
        else:
            rows = lance_dataset(files).to_table(columns=["path", "image_id"], filter=where)
        for row in rows.to_pylist():
            grouped.setdefault(row["image_id"], []).append(row["path"])
    for paths in grouped.values():
        paths.sort()
    return grouped


def image_record(db: "lancedb.DBConnection", image_id: str) -> "ImageRecord | None":
    """What the current images table and the files table hold for one image id, or None when it has no row."""
    from clipstore.results import ImageRecord

    where = f"id = {sql_string(image_id)}"
    columns = ["id", "width", "height", "format", "prompt", "prompt_source", "added_at"]
    rows = read_columns(open_images(db), columns, where).to_pylist()
    if not rows:
        return None
    row = rows[0]
    files = read_columns(db.open_table(FILES), ["path", "size"], f"image_id = {sql_string(image_id)}").to_pylist()
    added = row["added_at"]
    return ImageRecord(
        id=row["id"],
        paths=tuple(sorted(file["path"] for file in files)),
        width=row["width"],
        height=row["height"],
        format=row["format"],
        file_size=files[0]["size"] if files else None,
        prompt=row["prompt"],
        prompt_source=row["prompt_source"],
        added_at=added.isoformat() if added is not None else None,
    )


def image_vector(db: "lancedb.DBConnection", image_id: str) -> "np.ndarray | None":
    """The stored embedding (d,) float32 of one image id in the current images table, or None."""
    data = read_columns(open_images(db), ["embedding"], f"id = {sql_string(image_id)}")
    return vector_matrix(data.column("embedding"))[0] if data.num_rows else None


def count_files_under(db: "lancedb.DBConnection", prefix: str) -> int:
    """How many stored paths start with `prefix` (counted by LanceDB, through the `path` index when there is one)."""
    return db.open_table(FILES).count_rows(prefix_filter("path", prefix))


def image_ids_under(db: "lancedb.DBConnection", prefix: str) -> list[str]:
    """The distinct ids of the images stored under a path starting with `prefix`: one LanceDB query (a range
    on `path`, which its scalar index answers once the store has one), only the `image_id` column read."""
    column = read_columns(db.open_table(FILES), ["image_id"], prefix_filter("path", prefix)).column("image_id")
    return column.unique().to_pylist()


def prefix_filter(column: str, prefix: str) -> str:
    """SQL selecting the rows whose `column` starts with `prefix`, as a range (`>= prefix AND < next`): exact
    for any characters (LIKE would treat `%` and `_` in paths as wildcards) and served by a BTREE index."""
    lower = f"{column} >= {sql_string(prefix)}"
    upper = _prefix_successor(prefix)
    return lower if upper is None else f"{lower} AND {column} < {sql_string(upper)}"


def _prefix_successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (code point order, which is UTF-8
    byte order), or None when there is none (empty prefix, or only the largest code points)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be encoded; the next encodable code point follows them
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


def sql_string(value: str) -> str:
    """`value` as an SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values: Iterable[str]) -> str:
    """A `column IN ('a', 'b')` filter with SQL string quoting (single quotes doubled)."""
    quoted = ", ".join(sql_string(value) for value in values)
    return f"{column} IN ({quoted})"


def delete_where_in(table: "lancedb.table.Table", column: str, values: Iterable[str], chunk: int = 500) -> None:
    """Delete rows whose `column` is one of `values`, in chunks that keep each filter short."""
    for where in _chunked_filters(column, values, chunk):
        table.delete(where)


def update_where_in(
    table: "lancedb.table.Table", column: str, values: Iterable[str], updates: dict, chunk: int = 500
) -> None:
    """Set `updates` ({column: value}) on the rows whose `column` is one of `values`, in chunks (one commit each)."""
    for where in _chunked_filters(column, values, chunk):
        table.update(where=where, values=updates)


def _chunked_filters(column: str, values: Iterable[str], chunk: int) -> Iterator[str]:
    values = list(values)
    for start in range(0, len(values), chunk):
        yield sql_in(column, values[start : start + chunk])


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
