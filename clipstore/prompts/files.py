"""Reading prompts from files: one per line, CSV/TSV, JSONL/JSON and Parquet (e.g. DiffusionDB metadata).

A file is judged by its content, not only its name: an image, an archive or any other binary file is refused
with a `PromptFileError` naming it, before a single prompt is read, so bytes never turn into "prompts".
Text must be UTF-8 (a byte-order mark is honoured, so UTF-16/UTF-32 files with one are read too).
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

from clipstore.errors import PromptFileError, SourceNotFoundError  # PromptFileError: importable from here as before

PROMPT_COLUMNS = ("prompt", "text", "caption", "positive_prompt")
"""The column (CSV/TSV/Parquet) or key (JSONL/JSON) read when none is named: the first of these a file has."""

FORMATS = ".txt (one prompt per line), .csv, .tsv, .jsonl, .json or .parquet"

_SNIFF_BYTES = 8192
_PARQUET_MAGIC = b"PAR1"
# Longest first: the UTF-32-LE mark starts with the UTF-16-LE one.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")  # universal newlines, line ends kept (csv wants them)


def check_prompt_file(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """Refuse a file that is missing or, judging by its first bytes, not a prompt file; cheap (reads 8 KiB).

    Returns the file and how to read it: "parquet", or the text encoding ("utf-8-sig", "utf-16", "utf-32").
    """
    file = Path(path).expanduser()
    if file.is_dir():
        raise SourceNotFoundError(f"{file} is a folder; give the prompt files in it ({FORMATS}).")
    if not file.is_file():
        raise SourceNotFoundError(f"Cannot read prompts from {file}: no such file.")
    with open(file, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    from clipstore.imaging import describe_content, sniff_image_format

    image_format = sniff_image_format(head)
    if image_format is not None:
        raise PromptFileError(
            f"{file} is a {image_format} image, not a prompt file; prompt files are {FORMATS}. To store images "
            "with the prompts they were made from, ingest them: `clipstore ingest FOLDER` reads the prompts images "
            "carry (PNG `parameters` text chunks, EXIF descriptions) and sidecar captions (name.txt beside "
            "name.png), and `clipstore ingest FOLDER --manifest FILE` takes them from a CSV/TSV/JSONL of path and prompt."
        )
    is_parquet = head.startswith(_PARQUET_MAGIC)
    if file.suffix.lower() == ".parquet" or is_parquet:
        if not is_parquet:
            raise PromptFileError(
                f"{file} is named .parquet but is not a Parquet file; give it the suffix of its format ({FORMATS})."
            )
        if file.suffix.lower() != ".parquet":
            raise PromptFileError(f"{file} is a Parquet file; rename it to end in .parquet to read its prompt column.")
        return file, "parquet"
    encoding = next((name for mark, name in _BYTE_ORDER_MARKS if head.startswith(mark)), "utf-8-sig")
    try:
        # Incremental, not final: a character cut off by the end of the sniffed bytes is no error.
        start = codecs.getincrementaldecoder(encoding)().decode(head, final=False)
    except UnicodeDecodeError:
        start = None
    if start is None:
        what = describe_content(head)
        if b"\x00" in head or what != "unrecognised content":
            raise PromptFileError(
                f"{file} is not a text file ({what}). Prompts are read from UTF-8 text in {FORMATS}: "
                "extract or convert them into one of those first."
            )
        # No NUL and no known signature: most likely text in another encoding; reading it names the line.
    else:
        _refuse_nul(file, start)
    return file, encoding


def read_prompt_file(path: str | os.PathLike[str], column: str | None = None) -> Iterator[str]:
    """The prompts of a file, in file order (stripped; blank ones skipped).

    `.csv` / `.tsv`: the `column` column (default: the first of prompt, text, caption, positive_prompt).
    `.jsonl` / `.ndjson`: that key of each object (a line that is a bare JSON string counts too); `.json`: a
    JSON array of such objects or strings. `.parquet`: that column. Anything else (`.txt`, no suffix, ...): one
    prompt per line. The file is checked (`check_prompt_file`) when this is called, the rest of it as it is
    read: text that is not valid UTF-8, or holds a NUL byte, raises PromptFileError with the line.
    """
    file, encoding = check_prompt_file(path)
    return _prompts(file, encoding, column)


def _prompts(file: Path, encoding: str, column: str | None) -> Iterator[str]:
    suffix = file.suffix.lower()
    if encoding == "parquet":
        texts = _read_parquet(file, column)
    else:
        text = _decode(file, encoding)
        if suffix in (".csv", ".tsv"):
            texts = _read_delimited(text, file, column, "\t" if suffix == ".tsv" else ",")
        elif suffix in (".jsonl", ".ndjson"):
            texts = _read_records((_json_line(line, number, file) for number, line in enumerate(_lines(text), 1)), column, file)
        elif suffix == ".json":
            texts = _read_records(_json_array(text, file), column, file)
        else:
            texts = _lines(text)
    for text in texts:
        if isinstance(text, str) and text.strip():
            yield text.strip()


def _decode(file: Path, encoding: str) -> str:
    data = file.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].decode(encoding, errors="replace").count("\n") + 1
        raise PromptFileError(
            f"{file}, line {line}: not {'UTF-8' if encoding == 'utf-8-sig' else encoding.upper()} text "
            f"(byte 0x{data[exc.start]:02x}). Save the file as UTF-8 and add it again."
        ) from None
    _refuse_nul(file, text)
    return text


def _refuse_nul(file: Path, text: str) -> None:
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise PromptFileError(f"{file}, line {line}: contains a NUL byte, so it is not a text file; prompt files are {FORMATS}.")


def _lines(text: str) -> Iterator[str]:
    return (match.group() for match in _LINE.finditer(text))


def _choose(columns: list[str], column: str | None, file: Path) -> str:
    if column is not None:
        if column not in columns:
            raise PromptFileError(f"{file} has no column {column!r} (it has: {', '.join(columns)}). Pass --column NAME.")
        return column
    for name in PROMPT_COLUMNS:
        if name in columns:
            return name
    raise PromptFileError(
        f"{file} has no prompt column (looked for {', '.join(PROMPT_COLUMNS)}; it has: {', '.join(columns)}). "
        "Pass --column NAME."
    )


def _read_delimited(text: str, file: Path, column: str | None, delimiter: str) -> Iterator[str]:
    read = [0]  # lines handed to the reader: its own line_num lags behind on some errors

    def lines() -> Iterator[str]:
        for number, line in enumerate(_lines(text), 1):
            read[0] = number
            yield line

    reader = csv.DictReader(lines(), delimiter=delimiter)
    try:
        name = _choose(list(reader.fieldnames or []), column, file)
        for row in reader:
            yield row.get(name) or ""
    except csv.Error as exc:
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise PromptFileError(f"{file}, line {read[0]}: not valid {kind} ({exc}).") from None


def _json_line(line: str, number: int, file: Path) -> object:
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise PromptFileError(f"{file}, line {number}: not JSON ({exc.msg}).") from None


def _json_array(text: str, file: Path) -> list:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptFileError(f"{file}, line {exc.lineno}: not JSON ({exc.msg}).") from None
    if not isinstance(records, list):
        raise PromptFileError(
            f"{file} holds a JSON {type(records).__name__}; a .json prompt file is an array of prompts (strings or "
            "objects). For one JSON object per line, name the file .jsonl."
        )
    return records


def _read_records(records: Iterable[object], column: str | None, file: Path) -> Iterator[str]:
    """Prompts of JSON records: a string is a prompt; an object's prompt is its `column` key (chosen once)."""
    name = None
    for record in records:
        if isinstance(record, str):
            yield record
        elif isinstance(record, dict):
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
