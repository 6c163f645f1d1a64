"""`describe(table, store=...)`: caption the images of an app's own LanceDB table with a clipstore store's
describe ensemble (Model A + Model B, see `clipstore.describe`), written into columns of that table.

The images stay where the app keeps them: nothing is copied into the store. For each row, the image (a path,
`file://` URI or bytes, read like the "clipstore" embedding function reads it) is described by
`Store.describer()`, and four columns are written (added to the table when missing):

    <column>              the best bank prompt (string)
    <column>_embedding    its all-MiniLM-L6-v2 embedding (384 float32) — or, when the table has a
                          "clipstore-prompts" function whose source is <column>, that function's vector column
    <column>_score        the MiniLM cosine between the ensemble's prediction and that prompt (float32)
    <column>_error        null, or why the row's image could not be read (its prompt is then null)

Rows that already have a prompt are skipped unless `overwrite=True`; rows without one (new rows, and rows
whose image failed before) are described. Each batch is one `merge_insert` on `key` (default: the image
column itself, so rows sharing an image share its description), so an interrupted run keeps the batches it
finished and a re-run does only the rest.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from clipstore.errors import InvalidImageError, InvalidOptionError, NothingToDescribeWithError
from clipstore.progress import Progress, silent
from clipstore.results import _AsDict

if TYPE_CHECKING:
    import lancedb
    import numpy as np
    import pyarrow as pa

    from clipstore.describe.describer import Describer
    from clipstore.store.facade import Store

DESCRIBE_ROWS_STAGE = "describe rows"
"""The progress stage of `describe`: done/total count the rows to describe."""


@dataclass(frozen=True)
class TableDescribeReport(_AsDict):
    """What one `clipstore.lancedb.describe` run did to an app's table.

    table: the table's name. column, embedding_column, score_column, error_column: the columns written.
    described: rows that got a prompt in this run. already_described: rows skipped because they had one
    (0 with `overwrite=True`). failed: rows whose image could not be read (null prompt; the reason is in
    `error_column`). method: how the prompts were predicted ("ensemble", "model_b" or "model_a"; None when
    no row was described). head: the Model A head used, or None. notes: what the describer said (e.g. that
    the store has no trained Model A and Model B was used alone).
    """

    table: str
    column: str
    embedding_column: str
    score_column: str
    error_column: str
    described: int = 0
    already_described: int = 0
    failed: int = 0
    method: str | None = None
    head: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def describe(
    table: "lancedb.table.Table",
    *,
    store: "str | os.PathLike[str] | Store",
    column: str = "prompt",
    image_column: str | None = None,
    key: str | None = None,
    where: str | None = None,
    overwrite: bool = False,
    head: "str | os.PathLike[str] | None" = None,
    k: int | None = None,
    alpha: float | None = None,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> TableDescribeReport:
    """Write the store's description of each row's image into `table` (see the module docstring).

    store: a clipstore store (its folder, or a `clipstore.Store`) with a prompt bank (and, for the ensemble,
        a trained Model A). image_column: the column holding the images (default: the source column of the
        table's "clipstore" embedding function). key: a column that identifies rows (default: the image
        column). where: a LanceDB SQL filter choosing the rows to consider. overwrite: describe rows that
        already have a prompt too. head, k, alpha: as for `Store.describe`. batch_size: rows per commit.
        `progress(stage, done, total)` is called after each batch, as stage "describe rows".
    Raises InvalidOptionError for a missing column or one of the wrong type, NothingToDescribeWithError when
    the store's prompt bank is empty (describe writes bank prompts).
    """
    from clipstore.lancedb.functions import open_store

    if batch_size < 1:
        raise InvalidOptionError(f"batch_size must be at least 1, not {batch_size}")
    store = store if hasattr(store, "describer") else open_store(os.fspath(store))
    names = table.schema.names
    image_column = image_column or _image_column(table)
    key = key or image_column
    for role, name in (("image_column", image_column), ("key", key)):
        if name not in names:
            raise InvalidOptionError(f"{role}={name!r}: the table {table.name!r} has no such column (it has {', '.join(names)}).")
    if store.count_prompts() == 0:
        raise NothingToDescribeWithError(
            f"The prompt bank of the store at {store.path} is empty, and describe writes bank prompts. Add prompts "
            "(`clipstore prompts add FILE`), or ingest images that carry prompts."
        )
    columns = _output_columns(table, column)
    describer = store.describer(head=head)
    chosen = [f"({where})"] if where else []
    todo = chosen + ([] if overwrite else [f"{_quote(column)} IS NULL"])
    already_described = 0 if overwrite else table.count_rows(_all(chosen + [f"{_quote(column)} IS NOT NULL"]))
    null_images = _mark_null_images(table, todo, image_column, columns)
    run = _RowDescriber(store, describer, table, columns, key, image_column, overwrite, k, alpha)
    with_image = _all(todo + [f"{_quote(image_column)} IS NOT NULL"])
    total, done = table.count_rows(with_image), 0
    for batch in table.search().where(with_image).select(run.read_columns()).limit(None).to_batches(batch_size):
        run.write(batch)
        done += batch.num_rows
        (progress or silent)(DESCRIBE_ROWS_STAGE, done, total)
    return TableDescribeReport(
        table.name,
        *columns,
        described=run.described,
        already_described=already_described,
        failed=null_images + run.failed,
        method=", ".join(sorted(run.methods)) or None,
        head=describer.head_id if run.described else None,
        notes=tuple(describer.notes),
    )


class _Caption(NamedTuple):
    """One image's caption: the bank prompt (id, text) and its score, or the error that stopped it."""

    prompt_id: str | None = None
    text: str | None = None
    score: float | None = None
    error: str | None = None


class _RowDescriber:
    """Describes the rows of one batch and merges the results into the table."""

    def __init__(self, store: "Store", describer: "Describer", table, columns: tuple[str, str, str, str], key: str,
                 image_column: str, overwrite: bool, k: int | None, alpha: float | None):
        self.store, self.describer, self.table = store, describer, table
        self.column, self.embedding_column, self.score_column, self.error_column = columns
        self.key, self.image_column, self.overwrite, self.k, self.alpha = key, image_column, overwrite, k, alpha
        self.described = self.failed = 0
        self.methods: set[str] = set()

    def read_columns(self) -> list[str]:
        """The key, the image and every other embedding function's source and vector columns: a merge source
        lacking a function's vector column would make LanceDB embed its rows again (or fail without its
        source column)."""
        columns = [self.key, self.image_column]
        for config in self.table.embedding_functions.values():
            columns += [config.source_column, config.vector_column]
        ours = {self.column, self.embedding_column, self.score_column, self.error_column}
        return list(dict.fromkeys(name for name in columns if name not in ours))

    def write(self, batch: "pa.RecordBatch") -> None:
        """Describe the batch's images (once per key) and merge their captions into the table (one commit)."""
        import pyarrow as pa

        keys = batch.column(self.key).to_pylist()
        first_row: dict[Any, int] = {}
        for row, value in enumerate(keys):
            first_row.setdefault(value, row)
        batch = batch.take(pa.array(list(first_row.values()), pa.int64()))
        captions = [self._describe(value) for value in batch.column(self.image_column).to_pylist()]
        rows_per_key = Counter(keys)
        for value, caption in zip(first_row, captions):
            if caption.error is None:
                self.described += rows_per_key[value]
            else:
                self.failed += rows_per_key[value]
        vectors = self._bank_vectors({c.prompt_id for c in captions if c.prompt_id is not None})
        written = {
            self.column: [c.text for c in captions],
            self.embedding_column: [vectors.get(c.prompt_id) for c in captions],
            self.score_column: [c.score for c in captions],
            self.error_column: [c.error for c in captions],
        }
        source = pa.Table.from_batches([batch])
        for name, values in written.items():
            target = self.table.schema.field(name)
            source = source.append_column(target, pa.array(values, type=target.type))
        merge = self.table.merge_insert(self.key)
        if self.overwrite:
            merge = merge.when_matched_update_all()
        else:  # a row described meanwhile (or sharing the key with a described one) keeps its caption
            merge = merge.when_matched_update_all(where=f"target.{_quote(self.column)} IS NULL")
        merge.execute(source, on_bad_vectors="null")  # a failed row's embedding is null on purpose

    def _describe(self, value: Any) -> "_Caption":
        """The best bank prompt for one image column value, or why the image cannot be read."""
        from clipstore.lancedb.sources import load_source

        try:
            image = load_source(value, min_side=self.store.model.decode_min_side).image
        except InvalidImageError as exc:
            return _Caption(error=str(exc))
        description = self.describer.describe_decoded(image, k=self.k, alpha=self.alpha, top=1)
        self.methods.add(description.method)
        best = description.prompts[0]
        return _Caption(best.id, best.text, float(best.score))

    def _bank_vectors(self, ids: set[str]) -> "dict[str, np.ndarray]":
        """The MiniLM embeddings the bank stores for these prompt ids."""
        from clipstore.db import tables

        if not ids:
            return {}
        rows = tables.read_columns(tables.open_prompts(self.store.db), ["id", "minilm_embedding"], tables.sql_in("id", ids))
        return dict(zip(rows.column("id").to_pylist(), tables.vector_matrix(rows.column("minilm_embedding"))))


def _image_column(table) -> str:
    """The source column of the table's "clipstore" embedding function (there must be exactly one)."""
    from clipstore.lancedb.functions import ClipstoreEmbeddings

    sources = sorted({c.source_column for c in table.embedding_functions.values() if isinstance(c.function, ClipstoreEmbeddings)})
    if len(sources) != 1:
        found = f"it has several ({', '.join(sources)})" if sources else "it has none"
        raise InvalidOptionError(
            f"describe needs to know which column of table {table.name!r} holds the images: {found} embedded by the "
            "\"clipstore\" function. Pass image_column=NAME (a column of paths, file:// URIs or image bytes)."
        )
    return sources[0]


def _output_columns(table, column: str) -> tuple[str, str, str, str]:
    """The (prompt, embedding, score, error) column names, each added to the table when missing; InvalidOptionError
    for an existing one of another type."""
    import pyarrow as pa

    from clipstore.encoders.minilm import MINILM_DIM
    from clipstore.lancedb.functions import PromptEmbeddings

    embedding = next(
        (c.vector_column for c in table.embedding_functions.values() if c.source_column == column and isinstance(c.function, PromptEmbeddings)),
        f"{column}_embedding",
    )
    wanted = [
        (column, pa.string(), lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "a string column"),
        (embedding, pa.list_(pa.float32(), MINILM_DIM), lambda t: t == pa.list_(pa.float32(), MINILM_DIM), f"{MINILM_DIM} float32 values"),
        (f"{column}_score", pa.float32(), pa.types.is_floating, "a float column"),
        (f"{column}_error", pa.string(), lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "a string column"),
    ]
    schema = table.schema
    missing = [pa.field(name, arrow_type) for name, arrow_type, _, _ in wanted if name not in schema.names]
    for name, _, fits, expected in wanted:
        if name in schema.names and not fits(schema.field(name).type):
            raise InvalidOptionError(
                f"describe writes {expected} into column {name!r} of table {table.name!r}, but that column holds "
                f"{schema.field(name).type}. Choose another column=NAME (the columns are NAME, NAME_embedding, "
                "NAME_score and NAME_error)."
            )
    if missing:
        table.add_columns(pa.schema(missing))
    return tuple(name for name, _, _, _ in wanted)  # type: ignore[return-value]


def _mark_null_images(table, todo: list[str], image_column: str, columns: tuple[str, ...]) -> int:
    """Rows to describe whose image is null get their reason (one update); returns how many there are."""
    from clipstore.lancedb.sources import NULL_IMAGE

    null = _all(todo + [f"{_quote(image_column)} IS NULL"])
    count = table.count_rows(null)
    if count:
        table.update(where=null, values={columns[3]: NULL_IMAGE})
    return count


def _quote(name: str) -> str:
    """A column name for a LanceDB SQL filter (backticks, so any name works)."""
    return "`" + name.replace("`", "``") + "`"


def _all(filters: list[str]) -> str | None:
    return " AND ".join(filters) if filters else None

