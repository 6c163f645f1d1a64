"""Rows written as Lance fragments by many workers and committed to a table at once by one driver, and the
clean-up of fragments that were written but never committed.

A worker writes its rows into the table's own data folder (`write_fragments`) without committing anything: the
files are invisible to every reader until a commit names them. The driver gathers the fragments' metadata (JSON
text: it travels between processes), leaves out rows whose key a table already holds or another fragment
holds too (`commit_append`: a fragment holding such a row is written again without it), and commits them all in
ONE Lance `Append` against the version it read, retried on a conflicting commit. So a table shows all of a
run's rows or none of them.

Fragments nobody committed (a driver killed before its commit, a worker that died after writing and was run
again, a fragment written again without some rows) are files no version of the table names. `remove_orphans`
deletes them; it must run under the store's write lock, so that no writer is between writing and committing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from clipstore.db import layout
from clipstore.db.tables import read_setting, sql_in, table_names, write_setting
from clipstore.results import _AsDict

if TYPE_CHECKING:
    import lance
    import lancedb
    import pyarrow as pa
    from lance.fragment import FragmentMetadata

COMMIT_ATTEMPTS = 5
"""How often the driver tries its commit when another commit conflicts with it (re-reading the table each time)."""
_KEEP_EVERY_VERSION = timedelta(days=365 * 1000)
"""`cleanup_old_versions` removes versions older than this, i.e. none: only files no version names go."""


def write_fragments(uri: str, rows: "pa.Table", storage_options: Mapping[str, str] | None = None) -> list[str]:
    """Write `rows` (the table's schema) as new fragments of the Lance table at `uri`, uncommitted: their
    metadata as JSON texts, for `commit_append`."""
    import json

    from lance.fragment import write_fragments as lance_write_fragments

    if rows.num_rows == 0:
        return []
    fragments = lance_write_fragments(rows, uri, schema=rows.schema, storage_options=dict(storage_options or {}) or None)
    return [json.dumps(fragment.to_json()) for fragment in fragments]


def fragment_rows(uri: str, fragment: str, storage_options: Mapping[str, str] | None = None) -> "pa.Table":
    """The rows of an uncommitted fragment (JSON from `write_fragments`), read from its data files."""
    import pyarrow as pa
    from lance.file import LanceFileReader

    metadata = _metadata(fragment)
    parts = []
    for data_file in metadata.files:
        reader = LanceFileReader(f"{uri}/data/{data_file.path}", storage_options=dict(storage_options or {}) or None)
        parts.append(reader.read_all().to_table())
    if len(parts) == 1:
        return parts[0]
    table = parts[0]
    for part in parts[1:]:  # a fragment whose columns are spread over several files
        for name in part.column_names:
            table = table.append_column(part.schema.field(name), part.column(name))
    return table


def commit_append(
    uri: str,
    fragments: list[str],
    *,
    key: str,
    keep: Callable[[str, int], bool] | None = None,
    storage_options: Mapping[str, str] | None = None,
    keys: list[list[str]] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> "AppendResult":
    """Append the rows of `fragments` (JSON from `write_fragments`) to the Lance table at `uri` in one commit.

    Rows whose `key` the table already holds are left out, and so is every row `keep(key_value, fragment_index)`
    refuses (how the caller drops a key written by several workers: it keeps one fragment's row). A fragment
    that holds a left-out row is written again without it (its old files become orphans for `remove_orphans`).
    The commit is made against the version whose keys were checked; when another commit conflicts with it, the
    keys are checked again on the new version and the commit retried (`COMMIT_ATTEMPTS` times).
    `keys`: each fragment's `key` column when the caller knows them (else they are read from the fragments).
    `before_commit()` is called right before each commit attempt.
    """
    import lance

    options = dict(storage_options or {}) or None
    if keys is None:
        keys = [fragment_keys(uri, fragment, key, options) for fragment in fragments]
    error: Exception | None = None
    for _ in range(COMMIT_ATTEMPTS):
        dataset = lance.dataset(uri, storage_options=options)
        present = _present(dataset, key, {value for values in keys for value in values})
        chosen, rewritten, left_out = [], 0, 0
        for index, (fragment, values) in enumerate(zip(fragments, keys)):
            wanted = [value not in present and (keep is None or keep(value, index)) for value in values]
            if all(wanted):
                chosen.append(_metadata(fragment))
                continue
            left_out += wanted.count(False)
            if any(wanted):
                rows = fragment_rows(uri, fragment, options)
                rows = rows.filter(_mask(rows.column(key).to_pylist(), set(v for v, w in zip(values, wanted) if w)))
                chosen += [_metadata(text) for text in write_fragments(uri, rows, options)]
                rewritten += 1
        if not chosen:
            return AppendResult(dataset.version, 0, left_out, rewritten)
        if before_commit is not None:
            before_commit()
        try:
            committed = lance.LanceDataset.commit(
                uri, lance.LanceOperation.Append(chosen), read_version=dataset.version, storage_options=options
            )
        except (OSError, RuntimeError, ValueError) as exc:
            if "conflict" not in str(exc).lower():
                raise
            error = exc
            continue
        return AppendResult(committed.version, sum(fragment.num_rows for fragment in chosen), left_out, rewritten)
    raise error  # type: ignore[misc]


class AppendResult:
    """What `commit_append` committed: the table's new `version`, the `rows` appended, the rows `left_out`
    (already present, or refused by `keep`) and how many fragments were `rewritten` without them."""

    def __init__(self, version: int, rows: int, left_out: int, rewritten: int):
        self.version, self.rows, self.left_out, self.rewritten = version, rows, left_out, rewritten

    def __repr__(self) -> str:
        return f"AppendResult(version={self.version}, rows={self.rows}, left_out={self.left_out}, rewritten={self.rewritten})"


def fragment_keys(uri: str, fragment: str, key: str, storage_options: Mapping[str, str] | None = None) -> list[str]:
    """The `key` column of an uncommitted fragment, in row order."""
    return fragment_rows(uri, fragment, storage_options).column(key).to_pylist()


def remove_orphans(dataset: "lance.LanceDataset") -> tuple[int, int]:
    """Delete the table's files that no version names (fragments written but never committed, and what failed
    commits left), keeping every version: (files removed, bytes removed). Only under the store's write lock."""
    stats = dataset.cleanup_old_versions(older_than=_KEEP_EVERY_VERSION, delete_unverified=True, error_if_tagged_old_versions=False)
    files = stats.data_files_removed + stats.deletion_files_removed + stats.index_files_removed + stats.transaction_files_removed
    return files, stats.bytes_removed


def _present(dataset: "lance.LanceDataset", key: str, values: Iterable[str], chunk: int = 1000) -> set[str]:
    """Which of `values` the table holds in column `key`."""
    values = list(values)
    present: set[str] = set()
    for start in range(0, len(values), chunk):
        found = dataset.to_table(columns=[key], filter=sql_in(key, values[start : start + chunk]))
        present.update(found.column(key).to_pylist())
    return present


def _mask(values: list[str], wanted: set[str]) -> "pa.Array":
    import pyarrow as pa

    return pa.array([value in wanted for value in values], pa.bool_())


def _metadata(fragment: str) -> "FragmentMetadata":
    from lance.fragment import FragmentMetadata

    return FragmentMetadata.from_json(fragment)


def begin_uncommitted(db: "lancedb.DBConnection", table: str) -> None:
    """Record that fragments of `table` are about to be written and not committed yet (see `end_uncommitted`)."""
    import json

    write_setting(db, layout.UNCOMMITTED_FRAGMENTS_SETTING, json.dumps(table))


def end_uncommitted(db: "lancedb.DBConnection") -> None:
    """The fragments recorded by `begin_uncommitted` are committed, or removed."""
    write_setting(db, layout.UNCOMMITTED_FRAGMENTS_SETTING, "")


def interrupted_table(db: "lancedb.DBConnection") -> str | None:
    """The table a distributed ingest was writing fragments of when it stopped before finishing, or None."""
    import json

    value = read_setting(db, layout.UNCOMMITTED_FRAGMENTS_SETTING)
    return json.loads(value) if value else None


def clean_interrupted(db: "lancedb.DBConnection") -> tuple[int, int]:
    """Remove the fragments an interrupted distributed ingest left (under the write lock): (files, bytes)."""
    from clipstore.db.tables import table_exists

    table = interrupted_table(db)
    if table is None:
        return 0, 0
    removed = remove_orphans(db.open_table(table).to_lance()) if table_exists(db, table) else (0, 0)
    end_uncommitted(db)
    return removed


@dataclass(frozen=True)
class GcTable(_AsDict):
    """What `clipstore gc` removed from one table: `files` no version names and their `bytes`."""

    table: str
    files: int
    bytes: int


@dataclass(frozen=True)
class GcReport(_AsDict):
    """What `Store.gc` removed: per table (only those it removed something from), and in all
    (`files_removed`, `bytes_removed`). Every table version is kept."""

    tables: tuple[GcTable, ...]
    files_removed: int
    bytes_removed: int


def collect_garbage(db: "lancedb.DBConnection") -> GcReport:
    """`remove_orphans` on every table of the store but the write lease (written by waiting writers, who hold no
    lock), then clear the interrupted-ingest mark. Only under the store's write lock."""
    cleaned = []
    for name in sorted(table_names(db) - {layout.LEASE_TABLE}):
        files, size = remove_orphans(db.open_table(name).to_lance())
        if files:
            cleaned.append(GcTable(name, files, size))
    if interrupted_table(db) is not None:
        end_uncommitted(db)
    return GcReport(tuple(cleaned), sum(t.files for t in cleaned), sum(t.bytes for t in cleaned))
