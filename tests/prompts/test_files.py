"""Prompt files: text, CSV, TSV, JSON(L), Parquet; files that are not prompt text are refused naming the file."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from PIL import Image, PngImagePlugin

import clipstore
from sample_prompts import BLUE, OTHER, RED, RED_PARAPHRASE


@pytest.mark.parametrize(
    "name, content, column",
    [
        ("p.txt", f"{RED}\n\n{BLUE}\n{RED_PARAPHRASE}\n", None),
        ("p.csv", f'id,prompt\n1,"{RED}"\n2,"{BLUE}"\n3,"{RED_PARAPHRASE}"\n', None),
        ("p.tsv", f"caption\tx\n{RED}\t1\n{BLUE}\t2\n{RED_PARAPHRASE}\t3\n", None),
        ("p.jsonl", "\n".join(json.dumps({"text": t}) for t in (RED, BLUE, RED_PARAPHRASE)), "text"),
    ],
)
def test_prompt_files(store, tmp_path, name, content, column):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    report = store.add_prompts(path, column=column)
    assert report.inserted == 2 and [d.text for d in report.duplicates] == [RED_PARAPHRASE]
    assert store.list_prompts()[0].source == name


def test_parquet_prompt_file_like_diffusiondb(store, tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image_name": ["a.png", "b.png", "c.png"], "prompt": [RED, OTHER, RED_PARAPHRASE]}), tmp_path / "metadata.parquet")
    report = store.add_prompts(tmp_path / "metadata.parquet")
    assert report.inserted == 2


def test_missing_column_is_a_clear_error(store, tmp_path):
    (tmp_path / "p.csv").write_text("a,b\n1,2\n")
    with pytest.raises(clipstore.ClipstoreError, match="no prompt column.*--column"):
        store.add_prompts(tmp_path / "p.csv")


def _image_bytes(fmt: str) -> bytes:
    import io

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"{RED}\nSteps: 20, Sampler: Euler, Seed: 3")
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(out, format=fmt, **({"pnginfo": info} if fmt == "PNG" else {}))
    return out.getvalue()


@pytest.mark.parametrize("name, fmt", [("photo.png", "PNG"), ("photo.jpg", "JPEG"), ("photo.gif", "GIF"), ("photo.webp", "WEBP"), ("renamed.txt", "PNG")])
def test_an_image_given_as_a_prompt_file_is_refused_and_the_bank_is_unchanged(store, tmp_path, name, fmt):
    store.add_prompts([BLUE])
    (tmp_path / "good.txt").write_text(f"{RED}\n{OTHER}\n", encoding="utf-8")
    (tmp_path / name).write_bytes(_image_bytes(fmt))
    with pytest.raises(clipstore.PromptFileError) as refused:
        store.add_prompt_files([tmp_path / "good.txt", tmp_path / name])
    message = str(refused.value)
    assert str(tmp_path / name) in message and f"is a {fmt} image" in message
    assert "clipstore ingest" in message and "--manifest" in message and "PNG" in message
    assert [p.text for p in store.list_prompts()] == [BLUE]  # nothing from good.txt either


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("nul.txt", b"a red circle\nsome\x00binary\x00bytes\n", "line 2: contains a NUL byte"),
        ("latin1.txt", f"{RED}\n{BLUE}\ncaf\xe9 au lait\n".encode("latin-1"), "line 3: not UTF-8 text (byte 0xe9)"),
        ("binary.csv", bytes(range(256)) * 8, "is not a text file"),
        ("archive.jsonl", b"\x1f\x8b\x08\x00" + bytes(200), "gzip"),
        ("text.parquet", f"prompt\n{RED}\n".encode(), "is not a Parquet file"),
    ],
)
def test_binary_or_undecodable_prompt_files_are_refused_naming_the_file(store, tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(clipstore.PromptFileError, match="UTF-8|Parquet|text") as refused:
        store.add_prompts(tmp_path / name)
    assert str(tmp_path / name) in str(refused.value) and expected in str(refused.value)
    assert store.count_prompts() == 0


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("huge.csv", 'prompt\n"' + "x" * 200_000 + '"\n', "huge.csv, line 2: not valid CSV"),
        ("p.jsonl", '{"prompt": "a"}\n{oops\n', "p.jsonl, line 2: not JSON"),
        ("p.json", json.dumps({"prompt": RED}), "array of prompts"),
    ],
)
def test_malformed_prompt_files_are_one_clear_error(store, tmp_path, name, content, expected):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(clipstore.PromptFileError, match=expected):
        store.add_prompts(tmp_path / name)


def test_a_parquet_file_named_txt_is_refused_with_what_to_do(store, tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": [RED, BLUE]}), tmp_path / "prompts.txt")
    with pytest.raises(clipstore.PromptFileError, match=r"prompts\.txt is a Parquet file.*\.parquet"):
        store.add_prompts(tmp_path / "prompts.txt")
    assert store.count_prompts() == 0


def test_byte_order_marks_and_utf16_text_files_are_read(store, tmp_path):
    (tmp_path / "bom.csv").write_bytes(f"prompt,n\n{RED},1\n".encode("utf-8-sig"))
    (tmp_path / "windows.txt").write_bytes(f"{BLUE}\r\n{OTHER}\r\n".encode("utf-16"))  # PowerShell's `>` writes this
    (tmp_path / "list.json").write_text(json.dumps([{"prompt": "a photo of a cat on a sofa"}, {"prompt": ""}]), encoding="utf-8")
    report = store.add_prompt_files([tmp_path / "bom.csv", tmp_path / "windows.txt", tmp_path / "list.json"])
    assert report.inserted == 4 and report.rejected == ()
    assert [p.text for p in store.list_prompts()] == [RED, BLUE, OTHER, "a photo of a cat on a sofa"]


def test_control_characters_in_prompt_files_are_rejected_and_the_rest_kept(store, tmp_path):
    (tmp_path / "p.txt").write_text(f"{RED}\nbell \x07 here\n\n{BLUE}\n", encoding="utf-8")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "escaped \u0007 bell"}) + "\n" + json.dumps({"prompt": OTHER}) + "\n")
    report = store.add_prompt_files([tmp_path / "p.txt", tmp_path / "p.jsonl"])
    assert report.inserted == 3
    assert [(r.index, r.text) for r in report.rejected] == [(1, "bell \x07 here"), (3, "escaped \x07 bell")]
    assert [p.text for p in store.list_prompts()] == [RED, BLUE, OTHER]
