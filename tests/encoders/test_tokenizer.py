"""clipstore's CLIP tokenizer gives open_clip's token ids, on every kind of text, without importing open_clip."""

from __future__ import annotations

import random
import string
import subprocess
import sys

import numpy as np
import pytest

from clipstore.encoders.tokenizer import ClipTokenizer, vocab_path

TEXTS = [
    "",
    " ",
    "a red circle",
    "A RED Circle On A Striped Background",
    "Ünïcödé ＦＵＬＬ width ｔｅｘｔ and 日本語のテキスト, 中文, 한국어",
    "emoji 🚀🔥👩‍👩‍👧 and flags 🇫🇷",
    "&amp;lt;b&amp;gt; html &quot;quotes&quot; &eacute; &#233; &#x27; &nbsp; &unknown;",
    "<b>tags</b> & ampersands &",
    "don't you'll we've I'M they'RE it's o'clock",
    "<start_of_text> literal special tokens <end_of_text> <START_OF_TEXT>",
    "tabs\tand\nnewlines\r\nand   runs    of spaces  ",
    "3.14159 numbers 2024-11-23 1,000,000 ½ ² ٣",
    "!!!???... ---___*** ((( ))) [] {} @#$%^ `~",
    "mojibake: Ã©tÃ© Ã¼ber â€œquotedâ€\x9d",
    "İstanbul ǅ ß ﬁ ﬂ Æ œ — – … “curly” ‘single’",
    "control\x00chars\x07and\x1b[31mterminal escapes\x1b[0m",
    "combining e\u0301 vs é, zero\u200bwidth, rtl שלום مرحبا",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "x" * 500,
    " ".join(["a long prompt, masterpiece, best quality, 8k, highly detailed"] * 20),
    "(masterpiece:1.2), [lowres], {blurry}, <lora:detail:0.8>, BREAK, a_cat_in_a_hat",
]


def _open_clip_tokens(texts: list[str], context_length: int = 77, clean: str = "lower") -> np.ndarray:
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length, clean=clean)(texts).numpy()


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer(77)


@pytest.mark.parametrize("text", TEXTS)
def test_tokens_are_open_clips(tokenizer, text):
    assert tokenizer([text]).tolist() == _open_clip_tokens([text]).tolist()


@pytest.mark.parametrize("clean", ["lower", "whitespace", "canonicalize"])
@pytest.mark.parametrize("context_length", [32, 77])
def test_clean_modes_and_context_lengths_are_open_clips(clean, context_length):
    ours = ClipTokenizer(context_length, clean=clean)
    assert ours(TEXTS).tolist() == _open_clip_tokens(TEXTS, context_length, clean).tolist()


def test_random_texts_are_tokenized_as_open_clip_does(tokenizer):
    """Fuzz: seeded random strings over ASCII, Latin-1, symbols, CJK and emoji, with entities and specials."""
    rng = random.Random(13)
    alphabet = string.printable + "àéîõüßÆøåçñ€£¥©®°±µ¶·¿×÷–—‘’“”•…‰™ﬁ日本語中文한국어🚀🔥👍" + "\u0301\u200b\xa0"
    pieces = ["&amp;", "&lt;", "&#39;", "'s", "'ll", "<end_of_text>", "  ", "\n"]
    texts = []
    for _ in range(300):
        parts = [rng.choice(alphabet) if rng.random() < 0.9 else rng.choice(pieces) for _ in range(rng.randint(0, 60))]
        texts.append("".join(parts))
    assert tokenizer(texts).tolist() == _open_clip_tokens(texts).tolist()


def test_plain_ascii_is_left_alone_by_ftfy():
    """The tokenizer skips ftfy for printable ASCII without `&`; this is why that is exact."""
    import ftfy

    rng = random.Random(7)
    alphabet = [c for c in map(chr, range(0x20, 0x7F)) if c != "&"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 50))) for _ in range(2000)]
    texts += [c * 3 for c in alphabet]
    assert [ftfy.fix_text(text) for text in texts] == texts


def test_long_texts_are_cut_with_the_end_token_last(tokenizer):
    ids = tokenizer(["word " * 200])[0]
    assert len(ids) == 77 and ids[0] == tokenizer.sot_id and ids[-1] == tokenizer.eot_id
    assert tokenizer([""])[0].tolist()[:3] == [tokenizer.sot_id, tokenizer.eot_id, 0]


def test_vocabulary_is_found_without_importing_open_clip():
    code = (
        "import sys; from clipstore.encoders.tokenizer import ClipTokenizer; "
        "ids = ClipTokenizer(77)(['a red circle'])[0].tolist(); "
        "print(ids[:5], 'open_clip' in sys.modules, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[49406, 320, 736, 7117, 49407] False False"
    assert vocab_path().endswith("bpe_simple_vocab_16e6.txt.gz")
