"""The prompt bank through the store: inserts, files, the dedup migration, prompts from images, two writers."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, PngImagePlugin

import clipstore
from clipstore.db import tables
from clipstore.prompts.image_prompts import comfyui_prompt, positive_prompt, prompt_from_image_bytes
from clipstore.prompts.bank import prompt_id
from workers import insert_prompts
from clipstore.db import layout

RED = "a large red circle on a plain white background"
RED_PARAPHRASE = "a big red circle on a plain white backdrop"
BLUE = "three small blue squares scattered on a striped grey background"
OTHER = "a stock market report with rising charts"


def _bank_vectors(store) -> np.ndarray:
    data = tables.read_columns(store.db.open_table(layout.PROMPTS), ["minilm_embedding"])
    return np.asarray(data.column("minilm_embedding").to_pylist(), dtype=np.float32)


def test_add_prompts_keeps_the_first_of_each_near_duplicate_group(store):
    report = store.add_prompts([RED, BLUE, RED_PARAPHRASE, "  ", RED, OTHER], source="unit")
    assert report.inserted == 3
    assert [d.text for d in report.duplicates] == [RED_PARAPHRASE, RED]
    for duplicate in report.duplicates:
        assert duplicate.duplicate_of == prompt_id(RED) and duplicate.kept_text == RED
        assert duplicate.similarity >= 0.85
    assert [p.text for p in store.list_prompts()] == [RED, BLUE, OTHER]
    assert store.list_prompts()[0].source == "unit"

    again = store.add_prompts([RED_PARAPHRASE, "a photo of a cat on a sofa"])
    assert again.inserted == 1 and again.duplicates[0].duplicate_of == prompt_id(RED)
    assert store.count_prompts() == 4
    vectors = _bank_vectors(store)
    similarity = vectors @ vectors.T
    assert np.max(similarity - 2 * np.eye(len(vectors))) < 0.85


def test_bank_rows_hold_both_embeddings(store):
    store.add_prompts([RED])
    row = store.db.open_table(layout.PROMPTS).to_arrow().to_pylist()[0]
    clip = np.asarray(row["clip_embedding"])
    assert len(clip) == store.model.embed_dim and len(row["minilm_embedding"]) == 384
    assert float(clip @ store.encoder.encode_texts([RED])[0]) == pytest.approx(1.0, abs=1e-3)
    assert row["seq"] == 0 and row["id"] == prompt_id(RED)


def test_search_prompts_by_meaning(store):
    store.add_prompts([RED, BLUE, OTHER])
    hits = store.search_prompts("crimson disc on white", k=2)
    assert hits[0].text == RED and hits[0].score > hits[1].score


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


def test_dedup_migration_cleans_an_existing_bank_and_records_the_threshold(store, store_path):
    # Put the store back to before migration 0003 and fill the bank with near-duplicates behind its back.
    store.db.open_table(layout.MIGRATIONS).delete("name = '0003_prompt_dedup'")
    store.db.open_table(layout.SETTINGS).delete("key = 'prompt_dedup_threshold'")
    texts = [RED, RED_PARAPHRASE, BLUE, OTHER, RED]
    minilm = store.minilm.encode(texts)
    clip = store.encoder.encode_texts(texts)
    table = store.db.open_table(layout.PROMPTS)
    table.add(
        pa.table(
            {
                "id": [f"raw{i}" for i in range(len(texts))],
                "seq": np.arange(len(texts), dtype=np.int64),
                "text": texts,
                "clip_embedding": pa.FixedSizeListArray.from_arrays(pa.array(clip.reshape(-1)), clip.shape[1]),
                "minilm_embedding": pa.FixedSizeListArray.from_arrays(pa.array(minilm.reshape(-1)), 384),
                "source": ["old"] * len(texts),
                "added_at": pa.array([tables.utc_now()] * len(texts), pa.timestamp("us", tz="UTC")),
            },
            schema=table.schema,
        )
    )
    assert clipstore.connect(store_path, apply_migrations=False).prompt_dedup_threshold() is None

    reopened = clipstore.connect(store_path)
    assert reopened.prompt_dedup_threshold() == 0.85
    assert [p.text for p in reopened.list_prompts()] == [RED, BLUE, OTHER]
    dedup = [m for m in reopened.migrations() if m.name == "0003_prompt_dedup"]
    assert len(dedup) == 1 and dedup[0].applied


def test_positive_prompt_and_comfyui_parsing():
    parameters = f"{RED},\nmasterpiece\nNegative prompt: blurry, ugly\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"
    assert positive_prompt(parameters) == f"{RED}, masterpiece"
    workflow = {
        "3": {"class_type": "KSampler", "inputs": {"positive": ["6", 0], "negative": ["7", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": BLUE}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry"}},
    }
    assert comfyui_prompt(json.dumps(workflow)) == BLUE
    assert comfyui_prompt("not json") == ""


def _png_with_text(path: Path, key: str, value: str) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    Image.new("RGB", (32, 32), (200, 10, 10)).save(path, pnginfo=info)
    return path


def test_prompts_from_exif_description_and_user_comment(tmp_path):
    exif = Image.Exif()
    exif[0x010E] = RED
    image = Image.new("RGB", (16, 16))
    image.save(tmp_path / "d.jpg", exif=exif.tobytes())
    found = prompt_from_image_bytes((tmp_path / "d.jpg").read_bytes())
    assert (found.text, found.source) == (RED, "exif-description")

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + BLUE.encode("utf-16-le")
    image.save(tmp_path / "c.jpg", exif=exif.tobytes())
    found = prompt_from_image_bytes((tmp_path / "c.jpg").read_bytes())
    assert (found.text, found.source) == (BLUE, "exif-comment")


def test_ingest_reads_prompts_from_images_sidecars_and_manifests(store, tmp_path):
    folder = tmp_path / "gen"
    folder.mkdir()
    _png_with_text(folder / "sd.png", "parameters", f"{RED}\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, Seed: 3")
    _png_with_text(folder / "sd2.png", "parameters", f"{RED_PARAPHRASE}\nSteps: 20, Sampler: Euler, Seed: 4")
    Image.new("RGB", (32, 32), (0, 0, 200)).save(folder / "captioned.png")
    (folder / "captioned.txt").write_text(BLUE + "\n", encoding="utf-8")
    Image.new("RGB", (32, 32), (0, 200, 0)).save(folder / "listed.png")
    (tmp_path / "manifest.csv").write_text(f'path,prompt\ngen/listed.png,"{OTHER}"\n', encoding="utf-8")

    report = store.ingest(folder, manifest=tmp_path / "manifest.csv")
    assert report.added == 4 and report.failed == ()
    assert (report.prompts_found, report.prompts_inserted) == (4, 3)
    rows = {r["id"]: r for r in store.db.open_table(layout.IMAGES).to_arrow().to_pylist()}
    files = {Path(r["path"]).name: r["image_id"] for r in store.db.open_table(layout.FILES).to_arrow().to_pylist()}
    assert (rows[files["sd.png"]]["prompt"], rows[files["sd.png"]]["prompt_source"]) == (RED, "png-parameters")
    assert (rows[files["captioned.png"]]["prompt"], rows[files["captioned.png"]]["prompt_source"]) == (BLUE, "sidecar")
    assert (rows[files["listed.png"]]["prompt"], rows[files["listed.png"]]["prompt_source"]) == (OTHER, "manifest")
    assert rows[files["sd2.png"]]["prompt"] == RED_PARAPHRASE  # kept on the image, refused by the bank
    assert sorted(p.text for p in store.list_prompts()) == sorted([RED, BLUE, OTHER])
    assert {p.source for p in store.list_prompts()} == {"image:png-parameters", "image:sidecar", "image:manifest"}


def test_render_world_folder_prompts_reach_the_bank(store, tmp_path):
    from clipstore.world import render_folder
    from clipstore.world.samples import read_manifest

    manifest = render_folder(tmp_path / "w", 12, seed=2, size=64)
    report = store.ingest(manifest.folder)
    assert report.prompts_found == 12 and 0 < report.prompts_inserted <= 12
    prompts = {r["prompt"] for r in read_manifest(manifest.manifest)}
    assert {row["prompt"] for row in store.db.open_table(layout.IMAGES).to_arrow().to_pylist()} == prompts


@pytest.mark.slow
def test_two_writers_cannot_let_near_duplicates_in(store, store_path):
    from clipstore.world.corpus import prompt_corpus

    corpus = prompt_corpus(600, seed=9)
    first, second = corpus[:400], corpus[200:]  # overlapping, and full of near-duplicates of each other
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [context.Process(target=insert_prompts, args=(str(store_path), texts, out)) for texts in (first, second)]
    for worker in workers:
        worker.start()
    rejected = out.get(timeout=300) + out.get(timeout=300)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    bank = clipstore.connect(store_path)
    vectors = _bank_vectors(bank)
    similarity = vectors @ vectors.T - 2 * np.eye(len(vectors))
    assert similarity.max() < 0.85
    kept = {prompt_id(p.text): p.text for p in bank.list_prompts(limit=10_000)}
    assert len(kept) == bank.count_prompts()
    assert rejected and all(kept_id in kept for _, kept_id in rejected)
    rejected_vectors = bank.minilm.encode([text for text, _ in rejected])
    twins = bank.minilm.encode([kept[kept_id] for _, kept_id in rejected])
    assert np.all(np.sum(rejected_vectors * twins, axis=1) >= 0.85 - 1e-4)
    assert set(kept.values()) | {text for text, _ in rejected} >= set(corpus)


def test_ingest_keeps_images_and_warns_when_the_bank_cannot_be_updated(store, tmp_path, monkeypatch):
    folder = tmp_path / "gen"
    folder.mkdir()
    _png_with_text(folder / "sd.png", "parameters", f"{RED}\nSteps: 20, Sampler: Euler, Seed: 3")

    def unavailable(*args, **kwargs):
        raise clipstore.ModelUnavailableError("all-MiniLM-L6-v2 cannot be loaded (offline)")

    monkeypatch.setattr("clipstore.encoders.minilm.load_minilm_encoder", unavailable)
    report = store.ingest(folder)
    assert report.added == 1 and report.prompts_found == 1 and report.prompts_inserted == 0
    assert len(report.warnings) == 1 and "not added to the prompt bank" in report.warnings[0]
    assert store.db.open_table(layout.IMAGES).to_arrow().to_pylist()[0]["prompt"] == RED
    assert store.count_prompts() == 0


def test_before_the_dedup_migration_only_exact_repeats_are_refused(store):
    store.db.open_table(layout.SETTINGS).delete("key = 'prompt_dedup_threshold'")
    report = store.add_prompts([RED, RED_PARAPHRASE, RED, BLUE, BLUE])
    assert report.inserted == 3
    assert [(d.text, d.index, d.duplicate_of) for d in report.duplicates] == [(RED, 2, prompt_id(RED)), (BLUE, 4, prompt_id(BLUE))]
    assert store.add_prompts([BLUE]).duplicates[0].duplicate_of == prompt_id(BLUE)


# --- files that are not prompt text ---------------------------------------------------------------------------

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


# --- prompts with control characters ---------------------------------------------------------------------------

def test_control_characters_are_rejected_one_prompt_at_a_time_with_the_reason(store):
    given = [RED, "ansi \x1b[31mred\x1b[0m", "  ", "IHDR\x00\x00 \x1a", BLUE, "del\x7fete", "c1 \x85 next line", "tab\tseparated words", "lone \ud800 surrogate", 42]
    report = store.add_prompts(given)
    assert report.inserted == 3 and report.duplicates == ()
    assert [p.text for p in store.list_prompts()] == [RED, BLUE, "tab\tseparated words"]
    assert [(r.index, r.text) for r in report.rejected] == [(1, given[1]), (3, given[3]), (5, given[5]), (6, given[6]), (8, given[8]), (9, "42")]
    reasons = [r.reason for r in report.rejected]
    assert "U+001B" in reasons[0] and "U+0000" in reasons[1] and "U+007F" in reasons[2] and "U+0085" in reasons[3]
    assert "surrogate" in reasons[4] and "not a string" in reasons[5]
    assert report.to_dict()["rejected"][0] == {"index": 1, "text": given[1], "reason": reasons[0]}


def test_control_characters_in_prompt_files_are_rejected_and_the_rest_kept(store, tmp_path):
    (tmp_path / "p.txt").write_text(f"{RED}\nbell \x07 here\n\n{BLUE}\n", encoding="utf-8")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "escaped \u0007 bell"}) + "\n" + json.dumps({"prompt": OTHER}) + "\n")
    report = store.add_prompt_files([tmp_path / "p.txt", tmp_path / "p.jsonl"])
    assert report.inserted == 3
    assert [(r.index, r.text) for r in report.rejected] == [(1, "bell \x07 here"), (3, "escaped \x07 bell")]
    assert [p.text for p in store.list_prompts()] == [RED, BLUE, OTHER]


# --- removing prompts -----------------------------------------------------------------------------------------

# Their ids share the first 8 hex characters (2f530071...), found by hashing; the texts are unrelated.
SAME_PREFIX = ("a white fox on mars, at noon", "a pink castle in a forest, in oil paint")
TRICKY = ["a 100% cotton shirt on a hanger", "a 100 year old oak tree", "snake_case names in python code", "it's a dog's life in the park", "snakes in a desert dune"]


def _snapshot(store) -> dict:
    rows = store.db.open_table(layout.PROMPTS).to_arrow().to_pylist()
    return {row["id"]: row for row in rows}


def test_remove_by_id_and_unambiguous_prefix(store):
    store.add_prompts([RED, BLUE, *SAME_PREFIX], source="unit")
    before = _snapshot(store)
    ids = [prompt_id(t) for t in SAME_PREFIX]
    assert ids[0][:8] == ids[1][:8] and ids[0][8] != ids[1][8]

    for ambiguous in (ids[0][:6], ids[0][:8].upper()):
        with pytest.raises(clipstore.PromptSelectionError, match=rf"{ambiguous}.*matches 2 prompts"):
            store.remove_prompts(ids=[ambiguous])
    with pytest.raises(clipstore.PromptSelectionError, match="at least 6"):
        store.remove_prompts(ids=[ids[0][:5]])
    with pytest.raises(clipstore.PromptSelectionError, match="no prompt has an id.*0123456789"):
        store.remove_prompts(ids=[prompt_id(RED), "0123456789"])  # one bad id: nothing is removed
    assert _snapshot(store) == before

    report = store.remove_prompts(ids=[ids[0][:9], prompt_id(RED)])
    assert report.removed == 2 and not report.dry_run
    assert [(p.id, p.text, p.source) for p in report.prompts] == [(prompt_id(RED), RED, "unit"), (ids[0], SAME_PREFIX[0], "unit")]
    after = _snapshot(store)
    assert after == {key: row for key, row in before.items() if key not in (ids[0], prompt_id(RED))}  # others untouched


def test_remove_by_source_and_by_match_text_with_quotes_and_like_wildcards(store):
    store.add_prompts(TRICKY[:3], source="shop's \"catalogue\"")
    store.add_prompts(TRICKY[3:], source="other")
    assert store.count_prompts() == len(TRICKY)
    before = _snapshot(store)

    assert [p.text for p in store.remove_prompts(match="100%", dry_run=True).prompts] == [TRICKY[0]]
    assert [p.text for p in store.remove_prompts(match="_", dry_run=True).prompts] == [TRICKY[2]]
    assert [p.text for p in store.remove_prompts(match="DOG'S", dry_run=True).prompts] == [TRICKY[3]]
    assert [p.text for p in store.remove_prompts(match="%", dry_run=True).prompts] == [TRICKY[0]]
    assert [p.text for p in store.remove_prompts(source="other", match="snake", dry_run=True).prompts] == [TRICKY[4]]
    assert _snapshot(store) == before  # dry runs change nothing

    removed = store.remove_prompts(source="shop's \"catalogue\"")
    assert removed.removed == 3 and [p.text for p in removed.prompts] == TRICKY[:3]
    assert [p.text for p in store.list_prompts()] == TRICKY[3:]
    assert store.remove_prompts(source="no such source").removed == 0


def test_removed_prompt_frees_its_slot_for_a_near_duplicate(store):
    store.add_prompts([RED, BLUE, OTHER])
    assert store.add_prompts([RED_PARAPHRASE]).inserted == 0
    before = _snapshot(store)

    report = store.remove_prompts(match="large red circle")
    assert [p.text for p in report.prompts] == [RED]
    again = store.add_prompts([RED_PARAPHRASE])
    assert again.inserted == 1 and again.duplicates == ()
    assert [p.text for p in store.list_prompts()] == [BLUE, OTHER, RED_PARAPHRASE]
    after = _snapshot(store)
    assert {key: after[key] for key in before if key != prompt_id(RED)} == {key: row for key, row in before.items() if key != prompt_id(RED)}


def test_remove_needs_a_selector_and_a_real_match_text(store):
    store.add_prompts([RED])
    with pytest.raises(clipstore.PromptSelectionError, match="ids.*source.*match"):
        store.remove_prompts()
    with pytest.raises(clipstore.PromptSelectionError, match="empty"):
        store.remove_prompts(match="  ")
    assert store.remove_prompts(ids=[]).removed == 0
    assert store.count_prompts() == 1
