"""The prompt bank: a de-duplicated corpus of prompts with CLIP-text and all-MiniLM-L6-v2 embeddings.

It is the offline stage of the seeds' image-to-prompt methods (Model B's KNN searches it). Every insert path
goes through one gate, `PromptBank.add`: new prompts are compared (MiniLM cosine) with the kept ones and with
each other in insertion order; a prompt whose similarity with an already kept prompt reaches the store's
threshold (0.85, recorded by migration 0003) is rejected and reported with the prompt it duplicates.
Writers take the store's write lock, so two processes can never let near-duplicates in side by side.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from . import tables
from .dedup import deduplicate
from .results import _AsDict

if TYPE_CHECKING:
    import lancedb

    from .encoders.clip import ClipEncoder
    from .encoders.minilm import MiniLMEncoder

DEDUP_SETTING = "prompt_dedup_threshold"
_WRITE_CHUNK = 50_000
_EMBED_CHUNK = 4096


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
class PromptInsertReport(_AsDict):
    """What one insert did: how many prompts were kept, and each rejected near-duplicate."""

    inserted: int = 0
    duplicates: tuple[DuplicatePrompt, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PromptHit(_AsDict):
    """A bank prompt and its similarity score to a query."""

    id: str
    text: str
    score: float


@dataclass(frozen=True)
class StoredPrompt(_AsDict):
    id: str
    text: str
    source: str | None
    added_at: str | None


def prompt_id(text: str) -> str:
    """A prompt's id: the SHA-256 (hex) of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dedup_threshold(db: "lancedb.DBConnection") -> float | None:
    """The store's near-duplicate threshold, or None before the dedup migration (exact duplicates only)."""
    value = tables.read_setting(db, DEDUP_SETTING)
    return float(value) if value is not None else None


def load_bank(db: "lancedb.DBConnection", *, with_clip: bool = False):
    """Ids, texts and MiniLM embeddings (m, 384) of every kept prompt, in insertion order; with `with_clip`,
    also their CLIP text embeddings (m, d) from the same read."""
    table = tables.open_prompts(db)
    columns = ["id", "seq", "text", "minilm_embedding"] + (["clip_embedding"] if with_clip else [])
    data = tables.read_columns(table, columns)
    order = np.argsort(data.column("seq").to_numpy(), kind="stable")
    data = data.take(order)
    vectors = _matrix(data.column("minilm_embedding"), tables.MINILM_DIM)
    found = (data.column("id").to_pylist(), data.column("text").to_pylist(), vectors)
    if not with_clip:
        return found
    return (*found, _matrix(data.column("clip_embedding"), table.schema.field("clip_embedding").type.list_size))


def _matrix(column, dim: int) -> np.ndarray:
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(len(column), dim)


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
        progress: Callable[[int, int], None] | None = None,
    ) -> PromptInsertReport:
        """Insert prompts through the dedup gate; see the module docstring for the exact rule.

        Texts are stripped; blank ones are ignored. `source` is one label for all, or one per text.
        `minilm_embeddings` (n, 384), L2-normalised, may be given when already computed (they must be
        all-MiniLM-L6-v2's). `progress(done, total)` follows the embedding work.
        """
        import pyarrow as pa

        texts = [text.strip() for text in texts]
        sources = list(source) if isinstance(source, (list, tuple)) else [source] * len(texts)
        keep = [i for i, text in enumerate(texts) if text]
        texts = [texts[i] for i in keep]
        sources = [sources[i] for i in keep]
        if minilm_embeddings is not None:
            minilm_embeddings = np.asarray(minilm_embeddings, dtype=np.float32)[keep]
        if not texts:
            return PromptInsertReport()
        report = progress or (lambda done, total: None)
        total_work = 2 * len(texts)
        if minilm_embeddings is None:
            minilm_embeddings = self._embed(self._minilm().encode, texts, report, 0, total_work)

        bank_ids, bank_texts, bank_vectors = load_bank(self.db)
        threshold = dedup_threshold(self.db)
        if threshold is None:  # before the dedup migration only exact repeats are refused
            first_seen = {pid: i for i, pid in enumerate(bank_ids)}
            twin = np.full(len(texts), -1, dtype=np.int64)
            for i, text in enumerate(texts):
                pid = prompt_id(text)
                if pid in first_seen:
                    twin[i] = first_seen[pid]
                else:
                    first_seen[pid] = len(bank_ids) + i
            accepted = twin < 0
            similarity = np.where(accepted, 0.0, 1.0)
        else:
            result = deduplicate(minilm_embeddings, bank_vectors, threshold)
            accepted, twin, similarity = result.accepted, result.twin, result.similarity

        kept = np.flatnonzero(accepted)
        duplicates = []
        m = len(bank_ids)
        for i in np.flatnonzero(~accepted):
            j = int(twin[i])
            kept_id, kept_text = (bank_ids[j], bank_texts[j]) if j < m else (prompt_id(texts[j - m]), texts[j - m])
            duplicates.append(DuplicatePrompt(texts[i], kept_id, kept_text, round(float(similarity[i]), 6), keep[i]))

        kept_texts = [texts[i] for i in kept]
        if not kept_texts:
            report(total_work, total_work)
            return PromptInsertReport(0, tuple(duplicates))
        clip_embeddings = self._embed(self._clip().encode_texts, kept_texts, report, len(texts), total_work)
        next_seq = self._next_seq()
        now = tables.utc_now()
        schema = self.table.schema
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
            self.table.add(rows)
        report(total_work, total_work)
        return PromptInsertReport(len(kept), tuple(duplicates))

    def count(self) -> int:
        return self.table.count_rows()

    def list(self, limit: int = 20, offset: int = 0) -> list[StoredPrompt]:
        """Kept prompts in insertion order."""
        data = tables.read_columns(self.table, ["id", "seq", "text", "source", "added_at"]).to_pylist()
        data.sort(key=lambda row: row["seq"])
        return [
            StoredPrompt(row["id"], row["text"], row["source"], _iso(row["added_at"]))
            for row in data[offset : offset + limit]
        ]

    def search(self, text: str, k: int = 10) -> list[PromptHit]:
        """The k kept prompts closest in meaning to `text` (MiniLM cosine), best first."""
        ids, texts, vectors = load_bank(self.db)
        if not ids or k <= 0:
            return []
        query = self._minilm().encode([text])[0]
        scores = vectors @ query
        top = np.argsort(-scores, kind="stable")[:k]
        return [PromptHit(ids[i], texts[i], float(scores[i])) for i in top]

    def _next_seq(self) -> int:
        seqs = tables.read_columns(self.table, ["seq"]).column("seq").to_numpy()
        return int(seqs.max()) + 1 if len(seqs) else 0

    @staticmethod
    def _embed(encode, texts: Sequence[str], report, offset: int, total: int) -> np.ndarray:
        chunks = []
        for start in range(0, len(texts), _EMBED_CHUNK):
            chunks.append(np.asarray(encode(list(texts[start : start + _EMBED_CHUNK])), dtype=np.float32))
            report(offset + min(start + _EMBED_CHUNK, len(texts)), total)
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def _vector_column(vectors: np.ndarray):
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1] if vectors.ndim == 2 else 0)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
