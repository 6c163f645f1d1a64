"""The prompt bank: a de-duplicated corpus of prompts with CLIP-text and all-MiniLM-L6-v2 embeddings.

It is the offline stage of the seeds' image-to-prompt methods (Model B's KNN searches it). Every insert path
goes through one gate, `PromptBank.add`: new prompts are compared (MiniLM cosine) with the kept ones and with
each other in insertion order; a prompt whose similarity with an already kept prompt reaches the store's
threshold (0.85, recorded by migration 0003) is rejected and reported with the prompt it duplicates.
Before that, a prompt that is not clean text (control characters, a lone surrogate, not a string) is rejected
with the reason. `PromptBank.remove` deletes chosen prompts and nothing else: a removed prompt frees its slot
(a near-duplicate of it can be kept afterwards) and the rest of the bank cannot break the rule by losing one.
Writers take the store's write lock, so two processes can never let near-duplicates in side by side.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from clipstore.db import tables
from clipstore.prompts.dedup import deduplicate
from clipstore.prompts.nearest import MINILM_COLUMN, nearest_rows, update_bank_index
from clipstore.errors import InvalidOptionError, PromptSelectionError
from clipstore.results import _AsDict
from clipstore.progress import silent
from clipstore.db import layout

if TYPE_CHECKING:
    import lancedb

    from clipstore.encoders.clip import ClipEncoder
    from clipstore.encoders.minilm import MiniLMEncoder

_WRITE_CHUNK = 50_000
_EMBED_CHUNK = 4096
MIN_ID_PREFIX = 6
ADD_STAGE = "add prompts"
"""The progress stage of adding prompts: done/total count the MiniLM, then CLIP embedding work."""
"""An id given to `remove` may be a prefix of a prompt's id this long or longer (`prompts list` shows 12)."""

# C0 controls other than tab, line feed and carriage return (whitespace a CSV/JSON prompt may hold), DEL, the C1
# controls, and lone surrogates (which cannot be stored as UTF-8 at all).
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class DuplicatePrompt(_AsDict):
    """A rejected prompt: its text, the id and text of the kept prompt it duplicates, their cosine, and its
    position in the prompts given to the insert (0-based)."""

    text: str
    duplicate_of: str
    kept_text: str
    similarity: float
    index: int


@dataclass(frozen=True)
class RejectedPrompt(_AsDict):
    """A prompt refused because it is not clean text: its position in the prompts given to the insert
    (0-based), its text (`repr` of a value that is not a string) and why."""

    index: int
    text: str
    reason: str


@dataclass(frozen=True)
class PromptInsertReport(_AsDict):
    """What one insert did: how many prompts were kept, each rejected near-duplicate, and each prompt
    rejected because it is not clean text (blank prompts are skipped without a record)."""

    inserted: int = 0
    duplicates: tuple[DuplicatePrompt, ...] = field(default_factory=tuple)
    rejected: tuple[RejectedPrompt, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PromptHit(_AsDict):
    """A bank prompt and its similarity score to a query."""

    id: str
    text: str
    score: float


@dataclass(frozen=True)
class StoredPrompt(_AsDict):
    """A kept prompt: its id (SHA-256 of the text), text, source label and when it was added (ISO 8601 UTC)."""

    id: str
    text: str
    source: str | None
    added_at: str | None


@dataclass(frozen=True)
class PromptRemoveReport(_AsDict):
    """What one `remove` did: the prompts it selected (insertion order), how many of them it deleted (0 on a
    dry run), and whether it was a dry run."""

    removed: int
    prompts: tuple[StoredPrompt, ...]
    dry_run: bool = False


def prompt_id(text: str) -> str:
    """A prompt's id: the SHA-256 (hex) of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_problem(value: Any) -> str | None:
    """Why `value` cannot be a bank prompt, or None when it can (blank text can: it is skipped, not refused)."""
    if not isinstance(value, str):
        return f"not a string ({type(value).__name__})"
    found = _NOT_TEXT.search(value)
    if found is None:
        return None
    code = ord(found.group())
    what = "a lone surrogate" if 0xD800 <= code <= 0xDFFF else "control character"
    return f"contains {what} U+{code:04X} at character {found.start()}"


def resolve_prompt_ids(given: Iterable[str], ids: Iterable[str]) -> set[str]:
    """The ids among `ids` that `given` names: each a whole id, or a prefix of at least MIN_ID_PREFIX
    characters that only one id starts with (case-insensitive). Raises PromptSelectionError, naming every
    id that is unknown, ambiguous or too short, when one is."""
    ordered = sorted(ids)
    known = set(ordered)
    found: set[str] = set()
    problems = []
    for raw in given:
        key = raw.strip().lower()
        if raw in known or key in known:
            found.add(raw if raw in known else key)
            continue
        if len(key) < MIN_ID_PREFIX:
            problems.append(f"{raw!r} is too short (give at least {MIN_ID_PREFIX} characters of the id)")
            continue
        start = bisect.bisect_left(ordered, key)
        # Sorted: the ids starting with `key` follow `start`, so two of them show an ambiguous prefix.
        matches = [candidate for candidate in ordered[start : start + 2] if candidate.startswith(key)]
        if not matches:
            problems.append(f"no prompt has an id starting with {raw!r}")
        elif len(matches) > 1:
            count = bisect.bisect_left(ordered, key + "\U0010ffff") - start
            problems.append(f"{raw!r} matches {count} prompts (give more characters of the id)")
        else:
            found.add(matches[0])
    if problems:
        raise PromptSelectionError(f"Nothing removed: {'; '.join(problems)}. `clipstore prompts list` shows the ids.")
    return found


def dedup_threshold(db: "lancedb.DBConnection") -> float | None:
    """The store's near-duplicate threshold, or None before the dedup migration (exact duplicates only)."""
    value = tables.read_setting(db, layout.DEDUP_SETTING)
    return float(value) if value is not None else None


def load_bank(db: "lancedb.DBConnection", *, with_clip: bool = False):
    """Ids, texts and MiniLM embeddings (m, 384) of every kept prompt, in insertion order; with `with_clip`,
    also their CLIP text embeddings (m, d) from the same read."""
    table = tables.open_prompts(db)
    columns = ["id", "seq", "text", "minilm_embedding"] + (["clip_embedding"] if with_clip else [])
    data = tables.read_columns(table, columns)
    order = np.argsort(data.column("seq").to_numpy(), kind="stable")
    data = data.take(order)
    vectors = tables.vector_matrix(data.column("minilm_embedding"))
    found = (data.column("id").to_pylist(), data.column("text").to_pylist(), vectors)
    if not with_clip:
        return found
    return (*found, tables.vector_matrix(data.column("clip_embedding")))



def prompts_near(table: "lancedb.table.Table", minilm_vector: np.ndarray, k: int) -> list[PromptHit]:
    """The k prompts of a bank `table` nearest a MiniLM-space vector (384,), best first, scored by exact cosine:
    through the bank's vector index once it has one (`clipstore.prompts.nearest`), else by an exact scan."""
    if k <= 0:
        return []
    rows = nearest_rows(table, MINILM_COLUMN, minilm_vector, k, ["id", "text"])
    ids, texts = rows.column("id").to_pylist(), rows.column("text").to_pylist()
    return [PromptHit(i, t, 1.0 - float(d)) for i, t, d in zip(ids, texts, rows.column("_distance").to_pylist())]


def dedup_existing_prompts(db: "lancedb.DBConnection", threshold: float) -> int:
    """Delete the bank rows that are near-duplicates of earlier rows; returns how many were deleted."""
    ids, _, vectors = load_bank(db)
    if not ids:
        return 0
    result = deduplicate(vectors, None, threshold)
    rejected = [ids[i] for i in np.flatnonzero(~result.accepted)]
    if rejected:
        tables.delete_where_in(tables.open_prompts(db), "id", rejected)
    return len(rejected)


class PromptBank:
    """Inserts into, counts, lists and searches a store's `prompts` table. Callers hold the write lock for add."""

    def __init__(
        self,
        db: "lancedb.DBConnection",
        clip: Callable[[], "ClipEncoder"],
        minilm: Callable[[], "MiniLMEncoder"],
    ):
        self.db = db
        self._clip = clip
        self._minilm = minilm

    @property
    def table(self):
        return tables.open_prompts(self.db)

    def add(
        self,
        texts: Iterable[str],
        source: str | Sequence[str | None] | None = None,
        *,
        minilm_embeddings: np.ndarray | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> PromptInsertReport:
        """Insert prompts through the dedup gate; see the module docstring for the exact rule.

        Texts are stripped; blank ones are ignored; ones that are not clean text (`prompt_problem`) are
        reported in `rejected`. `source` is one label for all, or one per text. `minilm_embeddings` (n, 384),
        L2-normalised, may be given when already computed (they must be all-MiniLM-L6-v2's).
        `progress(ADD_STAGE, done, total)` follows the embedding work (MiniLM for every prompt, then CLIP for
        the kept ones: total is twice the number of prompts).
        """
        import pyarrow as pa

        given = list(texts)
        sources = list(source) if isinstance(source, (list, tuple)) else [source] * len(given)
        if len(sources) != len(given):
            raise InvalidOptionError(f"{len(sources)} source labels for {len(given)} prompts: give one label, or one per prompt.")
        keep, texts, rejected = _screen(given)
        sources = [sources[i] for i in keep]
        if minilm_embeddings is not None:
            minilm_embeddings = np.asarray(minilm_embeddings, dtype=np.float32)
            if len(keep) < len(given):  # no copy of a large insert's vectors when all of them count
                minilm_embeddings = minilm_embeddings[keep]
        if not texts:
            return PromptInsertReport(rejected=rejected)
        progress = progress or silent
        report = functools.partial(progress, ADD_STAGE)
        total_work = 2 * len(texts)
        if minilm_embeddings is None:
            minilm_embeddings = self._embed(self._minilm().encode, texts, report, 0, total_work)

        table = self.table
        threshold = dedup_threshold(self.db)
        if threshold is None:  # before the dedup migration only exact repeats are refused
            bank_ids, bank_rows, next_seq = _read_bank(table, "id")
            first_seen = {pid: i for i, pid in enumerate(bank_ids)}
            del bank_ids
            twin = np.full(len(texts), -1, dtype=np.int64)
            for i, text in enumerate(texts):
                pid = prompt_id(text)
                if pid in first_seen:
                    twin[i] = first_seen[pid]
                else:
                    first_seen[pid] = len(bank_rows) + i
            accepted = twin < 0
            similarity = np.where(accepted, 0.0, 1.0)
        else:
            bank_vectors, bank_rows, next_seq = _read_bank(table, MINILM_COLUMN)
            result = deduplicate(minilm_embeddings, bank_vectors, threshold)
            del bank_vectors  # the bank's share of the insert's memory ends here
            accepted, twin, similarity = result.accepted, result.twin, result.similarity

        kept = np.flatnonzero(accepted)
        m = len(bank_rows)
        bank_twins = _prompts_at(table, bank_rows[twin[(twin >= 0) & (twin < m)]])
        duplicates = []
        for i in np.flatnonzero(~accepted):
            j = int(twin[i])
            kept_id, kept_text = bank_twins[int(bank_rows[j])] if j < m else (prompt_id(texts[j - m]), texts[j - m])
            duplicates.append(DuplicatePrompt(texts[i], kept_id, kept_text, round(float(similarity[i]), 6), keep[i]))

        kept_texts = [texts[i] for i in kept]
        if not kept_texts:
            report(total_work, total_work)
            return PromptInsertReport(0, tuple(duplicates), rejected)
        clip_embeddings = self._embed(self._clip().encode_texts, kept_texts, report, len(texts), total_work)
        now = tables.utc_now()
        schema = table.schema
        for start in range(0, len(kept), _WRITE_CHUNK):
            chunk = slice(start, start + _WRITE_CHUNK)
            rows = pa.table(
                {
                    "id": [prompt_id(text) for text in kept_texts[chunk]],
                    "seq": np.arange(next_seq + start, next_seq + start + len(kept_texts[chunk]), dtype=np.int64),
                    "text": kept_texts[chunk],
                    "clip_embedding": _vector_column(clip_embeddings[chunk]),
                    "minilm_embedding": _vector_column(minilm_embeddings[kept[chunk]]),
                    "source": [sources[i] for i in kept[chunk]],
                    "added_at": pa.array([now] * len(kept_texts[chunk]), pa.timestamp("us", tz="UTC")),
                },
                schema=schema,
            )
            table.add(rows)
        update_bank_index(self.db, table)
        report(total_work, total_work)
        return PromptInsertReport(len(kept), tuple(duplicates), rejected)

    def remove(
        self,
        ids: Iterable[str] | None = None,
        source: str | None = None,
        match: str | None = None,
        *,
        dry_run: bool = False,
    ) -> PromptRemoveReport:
        """Delete the prompts the selectors name, and nothing else; callers hold the write lock.

        ids: whole ids or unambiguous prefixes (`resolve_prompt_ids`; an unknown one removes nothing and
        raises PromptSelectionError). source: every prompt with this source label. match: every prompt whose
        text contains this text (case-insensitive, Unicode case folding; a plain substring, no wildcards).
        Given together, the selectors narrow each other (a prompt must satisfy all). With `dry_run` the
        report lists what would be removed and the bank is not touched.
        """
        if ids is None and source is None and match is None:
            raise PromptSelectionError(
                "Say which prompts to remove: ids (--id), a source label (--source) or a text they contain (--match)."
            )
        if match is not None and not match.strip():
            raise PromptSelectionError("The match text is empty, so it would select every prompt; give text the prompts contain.")
        rows = tables.read_columns(self.table, ["id", "seq", "text", "source", "added_at"]).to_pylist()
        if ids is not None:
            wanted = resolve_prompt_ids([ids] if isinstance(ids, str) else list(ids), [row["id"] for row in rows])
            rows = [row for row in rows if row["id"] in wanted]
        if source is not None:
            rows = [row for row in rows if row["source"] == source]
        if match is not None:
            needle = match.casefold()
            rows = [row for row in rows if needle in (row["text"] or "").casefold()]
        rows.sort(key=lambda row: row["seq"])
        if rows and not dry_run:
            tables.delete_where_in(self.table, "id", {row["id"] for row in rows})
        return PromptRemoveReport(0 if dry_run else len(rows), tuple(_stored(row) for row in rows), dry_run)

    def count(self) -> int:
        return self.table.count_rows()

    def list(self, limit: int = 20, offset: int = 0) -> list[StoredPrompt]:
        """Kept prompts in insertion order."""
        data = tables.read_columns(self.table, ["id", "seq", "text", "source", "added_at"]).to_pylist()
        data.sort(key=lambda row: row["seq"])
        return [_stored(row) for row in data[offset : offset + limit]]

    def search(self, text: str, k: int = 10) -> list[PromptHit]:
        """The k kept prompts closest in meaning to `text` (MiniLM cosine), best first (see `prompts_near`)."""
        table = self.table
        if k <= 0 or table.count_rows() == 0:
            return []
        return prompts_near(table, self._minilm().encode([text])[0], k)

    @staticmethod
    def _embed(encode, texts: Sequence[str], report, offset: int, total: int) -> np.ndarray:
        """encode(texts) (n, d) float32, _EMBED_CHUNK texts at a time, filled into one array (no second copy)."""
        vectors = None
        for start in range(0, len(texts), _EMBED_CHUNK):
            chunk = np.asarray(encode(list(texts[start : start + _EMBED_CHUNK])), dtype=np.float32)
            if vectors is None:
                vectors = np.empty((len(texts), chunk.shape[1]), np.float32)
            vectors[start : start + len(chunk)] = chunk
            report(offset + min(start + _EMBED_CHUNK, len(texts)), total)
        return vectors if vectors is not None else np.zeros((0, 0), np.float32)


def _screen(given: Sequence[Any]) -> tuple[list[int], list[str], tuple[RejectedPrompt, ...]]:
    """(positions of the prompts to consider, those prompts stripped, the rejected ones); blanks are dropped."""
    keep, texts, rejected = [], [], []
    for index, value in enumerate(given):
        # Checked once stripped, as files are read: surrounding whitespace (\x1c-\x1f and \x85 count) goes.
        text = value.strip() if isinstance(value, str) else value
        problem = prompt_problem(text)
        if problem is not None:
            rejected.append(RejectedPrompt(index, text if isinstance(text, str) else repr(text), problem))
        elif text:
            keep.append(index)
            texts.append(text)
    return keep, texts, tuple(rejected)


def _read_bank(table: "lancedb.table.Table", column: str) -> tuple[Any, np.ndarray, int]:
    """One streamed pass over a bank table: `column` of every row (a float32 matrix (m, d) for a vector column,
    filled batch by batch so that no other copy of it is held; else a list), the rows' LanceDB row ids (m,)
    (`_prompts_at` looks their texts up) and the next free `seq`. Rows come in the table's order, not
    insertion order: the dedup gate keeps every bank prompt, whatever their order."""
    import pyarrow as pa

    vector = pa.types.is_fixed_size_list(table.schema.field(column).type)
    count = table.count_rows()
    values: Any = np.empty((count, table.schema.field(column).type.list_size), np.float32) if vector else []
    rowids = np.empty(count, np.uint64)
    filled, next_seq = 0, 0
    scan = table.search().with_row_id(True).select(["seq", column]).limit(None).to_batches()
    for batch in scan:
        rows = batch.num_rows
        if filled + rows > count:
            raise RuntimeError("the prompt bank changed while it was read; writers must hold the store's write lock")
        if vector:
            values[filled : filled + rows] = tables.vector_matrix(batch.column(column))
        else:
            values.extend(batch.column(column).to_pylist())
        rowids[filled : filled + rows] = batch.column("_rowid").to_numpy()
        if rows:
            next_seq = max(next_seq, int(batch.column("seq").to_numpy().max()) + 1)
        filled += rows
    return values[:filled], rowids[:filled], next_seq


def _prompts_at(table: "lancedb.table.Table", rowids: np.ndarray) -> dict[int, tuple[str, str]]:
    """{row id: (prompt id, text)} of the bank rows with these LanceDB row ids (one streamed pass; only those
    rows' texts are held)."""
    wanted = np.unique(np.asarray(rowids, dtype=np.uint64))
    found: dict[int, tuple[str, str]] = {}
    if not len(wanted):
        return found
    for batch in table.search().with_row_id(True).select(["id", "text"]).limit(None).to_batches():
        hits = np.flatnonzero(np.isin(batch.column("_rowid").to_numpy(), wanted))
        if len(hits):
            part = batch.take(hits)
            found.update(zip(part.column("_rowid").to_pylist(), zip(part.column("id").to_pylist(), part.column("text").to_pylist())))
    return found


def _stored(row: dict) -> StoredPrompt:
    return StoredPrompt(row["id"], row["text"], row["source"], _iso(row["added_at"]))


def _vector_column(vectors: np.ndarray):
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1] if vectors.ndim == 2 else 0)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
