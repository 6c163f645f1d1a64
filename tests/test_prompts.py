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
from clipstore import tables
from clipstore.image_prompts import comfyui_prompt, positive_prompt, prompt_from_image_bytes
from clipstore.prompts import prompt_id
from workers import insert_prompts

RED = "a large red circle on a plain white background"
RED_PARAPHRASE = "a big red circle on a plain white backdrop"
BLUE = "three small blue squares scattered on a striped grey background"
OTHER = "a stock market report with rising charts"


def _bank_vectors(store) -> np.ndarray:
    data = tables.read_columns(store.db.open_table(tables.PROMPTS), ["minilm_embedding"])
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
    row = store.db.open_table(tables.PROMPTS).to_arrow().to_pylist()[0]
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
    store.db.open_table(tables.MIGRATIONS).delete("name = '0003_prompt_dedup'")
    store.db.open_table(tables.SETTINGS).delete("key = 'prompt_dedup_threshold'")
    texts = [RED, RED_PARAPHRASE, BLUE, OTHER, RED]
    minilm = store.minilm.encode(texts)
    clip = store.encoder.encode_texts(texts)
    table = store.db.open_table(tables.PROMPTS)
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
    rows = {r["id"]: r for r in store.db.open_table(tables.IMAGES).to_arrow().to_pylist()}
    files = {Path(r["path"]).name: r["image_id"] for r in store.db.open_table(tables.FILES).to_arrow().to_pylist()}
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
    assert {row["prompt"] for row in store.db.open_table(tables.IMAGES).to_arrow().to_pylist()} == prompts


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
    assert store.db.open_table(tables.IMAGES).to_arrow().to_pylist()[0]["prompt"] == RED
    assert store.count_prompts() == 0


def test_before_the_dedup_migration_only_exact_repeats_are_refused(store):
    store.db.open_table(tables.SETTINGS).delete("key = 'prompt_dedup_threshold'")
    report = store.add_prompts([RED, RED_PARAPHRASE, RED, BLUE, BLUE])
    assert report.inserted == 3
    assert [(d.text, d.index, d.duplicate_of) for d in report.duplicates] == [(RED, 2, prompt_id(RED)), (BLUE, 4, prompt_id(BLUE))]
    assert store.add_prompts([BLUE]).duplicates[0].duplicate_of == prompt_id(BLUE)
