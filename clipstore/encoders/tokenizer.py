"""CLIP's byte-level BPE tokenizer, without open_clip, torch or transformers.

The token ids are those of open_clip's `SimpleTokenizer` (the tokenizer of OpenAI CLIP and of every open_clip
model with a CLIP text transformer): the text is cleaned (ftfy, HTML entities unescaped twice, whitespace runs
collapsed; then lower-cased, kept as is, or canonicalised, as the model's config says), split by CLIP's
pre-tokenisation pattern, each piece's UTF-8 bytes mapped to printable characters and merged by the BPE merges of
open_clip's vocabulary file, and wrapped in start/end-of-text tokens, truncated to the context length.
tests/encoders/test_tokenizer.py checks the ids against open_clip's on many kinds of text.

The vocabulary file is open_clip's `bpe_simple_vocab_16e6.txt.gz`, found where open_clip is installed without
importing it (`vocab_path`).
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import os
import string
from functools import lru_cache
from typing import Sequence

import numpy as np

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
MERGES = 49152 - 256 - 2
"""How many merges of the vocabulary file CLIP uses (the vocabulary is 256 bytes, 256 word-final bytes, the
merges and the two special tokens: 49408 ids)."""
CLEAN_MODES = ("lower", "whitespace", "canonicalize")
END_OF_WORD = "</w>"


class VocabularyNotFound(LookupError):
    """open_clip (and so its BPE vocabulary file) is not installed."""


def vocab_path() -> str:
    """Path of open_clip's BPE vocabulary file, found without importing open_clip."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise VocabularyNotFound("open_clip is not installed, so its BPE vocabulary file cannot be found")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, VOCAB_FILE)
        if os.path.isfile(path):
            return path
    raise VocabularyNotFound(f"open_clip's {VOCAB_FILE} is missing from {list(spec.submodule_search_locations)}")


@lru_cache(maxsize=1)
def _byte_symbols() -> tuple[str, ...]:
    """The printable character standing for each byte value 0..255: printable Latin-1 bytes stand for
    themselves, the others (controls, space, a few more) for the code points from 256 up, in byte order."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return tuple(symbols)


def _byte_order() -> list[str]:
    """The byte symbols in vocabulary order: the printable ranges first, then the others (CLIP's id order)."""
    symbols = _byte_symbols()
    printable = [byte for byte in range(256) if ord(symbols[byte]) == byte]
    return [symbols[byte] for byte in printable] + [symbols[byte] for byte in range(256) if ord(symbols[byte]) != byte]


class ClipTokenizer:
    """Text -> CLIP token ids.

    context_length: ids per text (sot + pieces + eot, truncated with eot kept last, zero-padded).
    clean: "lower" (CLIP's default), "whitespace" (no lower-casing) or "canonicalize" (punctuation removed,
    lower-cased), as open_clip's `tokenizer_kwargs.clean`.
    """

    def __init__(self, context_length: int = 77, *, clean: str = "lower", path: str | None = None):
        if clean not in CLEAN_MODES:
            raise ValueError(f"clean must be one of {CLEAN_MODES}, not {clean!r}")
        import regex

        self.context_length = context_length
        self.clean = clean
        self.path = path or vocab_path()
        with gzip.open(self.path, "rt", encoding="utf-8") as handle:
            merges = handle.read().split("\n")[1 : MERGES + 1]  # "first second", best first
        self._ranks = dict(zip(merges, range(len(merges))))
        pieces = _byte_order()
        pieces += [piece + END_OF_WORD for piece in pieces]
        pieces += [merge.replace(" ", "") for merge in merges]
        pieces += [START_OF_TEXT, END_OF_TEXT]
        self._ids = {piece: index for index, piece in enumerate(pieces)}  # a later duplicate wins, as in CLIP
        self.vocab_size = len(self._ids)
        self.sot_id = self._ids[START_OF_TEXT]
        self.eot_id = self._ids[END_OF_TEXT]
        self._words: dict[str, list[int]] = {START_OF_TEXT: [self.sot_id], END_OF_TEXT: [self.eot_id]}
        self._pattern = regex.compile(
            rf"{START_OF_TEXT}|{END_OF_TEXT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+",
            regex.IGNORECASE,
        )

    def cleaned(self, text: str) -> str:
        """The text as CLIP sees it before splitting: ftfy-fixed, HTML-unescaped (twice), whitespace collapsed,
        then lower-cased or canonicalised per `clean`."""
        if not _plain(text):  # ftfy.fix_text and html.unescape leave plain text as it is; skip their cost
            import ftfy

            text = html.unescape(html.unescape(ftfy.fix_text(text)))
        text = text.strip()
        if self.clean == "canonicalize":
            text = text.replace("_", " ").translate(_PUNCTUATION).lower()
        text = " ".join(text.split())
        return text.lower() if self.clean == "lower" else text

    def encode(self, text: str) -> list[int]:
        """The BPE ids of `text` (no start/end tokens, no truncation)."""
        symbols = _byte_symbols()
        ids: list[int] = []
        for piece in self._pattern.findall(self.cleaned(text)):
            word = "".join(symbols[byte] for byte in piece.encode("utf-8"))
            cached = self._words.get(word)
            if cached is None:
                cached = self._words[word] = [self._ids[part] for part in self._merge(word)]
            ids += cached
        return ids

    def _merge(self, word: str) -> list[str]:
        """BPE: start from the characters (the last one marked word-final), and merge the adjacent pair of
        lowest rank everywhere it occurs, left to right, until no adjacent pair is a known merge."""
        parts = list(word[:-1]) + [word[-1] + END_OF_WORD]
        while len(parts) > 1:
            rank, best = min((self._ranks.get(f"{a} {b}", MERGES), (a, b)) for a, b in zip(parts, parts[1:]))
            if rank == MERGES:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def ids(self, text: str) -> list[int]:
        """sot + `encode(text)` + eot, cut to the context length with eot kept as the last id."""
        tokens = [self.sot_id, *self.encode(text), self.eot_id]
        if len(tokens) > self.context_length:
            tokens = tokens[: self.context_length]
            tokens[-1] = self.eot_id
        return tokens

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """Texts -> int64 array (n, context_length) of ids, zero-padded (what open_clip's tokenizer returns)."""
        if isinstance(texts, str):
            texts = [texts]
        result = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = self.ids(text)
            result[row, : len(tokens)] = tokens
        return result


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _plain(text: str) -> bool:
    """Printable ASCII without `&`: nothing for ftfy to fix (mojibake, controls, line breaks, widths, quotes and
    ligatures are all outside it) and no HTML entity to unescape."""
    return text.isascii() and text.isprintable() and "&" not in text
