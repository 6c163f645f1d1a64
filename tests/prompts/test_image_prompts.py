"""Prompts that come with images (PNG parameters, ComfyUI, EXIF, sidecars, manifests) and reach the bank on ingest."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, PngImagePlugin

import clipstore
from clipstore.prompts.image_prompts import comfyui_prompt, positive_prompt, prompt_from_image_bytes
from clipstore.db import layout
from sample_prompts import BLUE, OTHER, RED, RED_PARAPHRASE


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
