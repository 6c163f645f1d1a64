"""Reading prompts from files: one per line, CSV/TSV, JSONL and Parquet (e.g. DiffusionDB metadata)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterator

from .errors import ClipstoreError, SourceNotFoundError

DEFAULT_COLUMN = "prompt"
_TEXT_COLUMNS = ("prompt", "text", "caption", "positive_prompt")


class PromptFileError(ClipstoreError):
    """A prompt file cannot be read as the format its name says (or has no prompt column)."""


def read_prompt_file(path: str | os.PathLike[str], column: str | None = None) -> Iterator[str]:
    """Yield the prompts of a file, in file order.

    `.txt` (or any unknown suffix): one prompt per line. `.csv` / `.tsv`: the `column` column (default: the
    first of prompt, text, caption, positive_prompt). `.jsonl` / `.ndjson`: that key of each object (a line
    that is a bare JSON string counts too). `.parquet`: that column (needs pyarrow). Blank prompts are skipped.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise SourceNotFoundError(f"Cannot read prompts from {file}: no such file.")
    suffix = file.suffix.lower()
    if suffix in (".csv", ".tsv"):
        texts = _read_delimited(file, column, "\t" if suffix == ".tsv" else ",")
    elif suffix in (".jsonl", ".ndjson"):
        texts = _read_jsonl(file, column)
    elif suffix == ".parquet":
        texts = _read_parquet(file, column)
    else:
        texts = _read_lines(file)
    for text in texts:
        if isinstance(text, str) and text.strip():
            yield text.strip()


def _read_lines(file: Path) -> Iterator[str]:
    with open(file, encoding="utf-8", errors="replace") as lines:
        yield from lines


def _choose(columns: list[str], column: str | None, file: Path) -> str:
    if column is not None:
        if column not in columns:
            raise PromptFileError(f"{file} has no column {column!r} (it has: {', '.join(columns)}). Pass --column NAME.")
        return column
    for name in _TEXT_COLUMNS:
        if name in columns:
            return name
    raise PromptFileError(
        f"{file} has no prompt column (looked for {', '.join(_TEXT_COLUMNS)}; it has: {', '.join(columns)}). "
        "Pass --column NAME."
    )


def _read_delimited(file: Path, column: str | None, delimiter: str) -> Iterator[str]:
    with open(file, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        name = _choose(list(reader.fieldnames or []), column, file)
        for row in reader:
            yield row.get(name) or ""


def _read_jsonl(file: Path, column: str | None) -> Iterator[str]:
    name = None
    with open(file, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptFileError(f"{file}, line {number}: not JSON ({exc.msg}).") from exc
            if isinstance(record, str):
                yield record
                continue
            if not isinstance(record, dict):
                continue
            if name is None:
                name = _choose(list(record), column, file)
            value = record.get(name)
            yield value if isinstance(value, str) else ""


def _read_parquet(file: Path, column: str | None) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file)
    except Exception as exc:  # pyarrow raises ArrowInvalid and friends for a damaged file
        raise PromptFileError(f"Cannot read {file} as Parquet: {exc}") from exc
    name = _choose(parquet.schema_arrow.names, column, file)
    for batch in parquet.iter_batches(columns=[name], batch_size=65536):
        yield from (value or "" for value in batch.column(0).to_pylist())
