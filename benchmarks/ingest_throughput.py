"""Ingest throughput: clipstore's pipeline against a naive per-image loop, side by side in one run.

Both embed the same folder of JPEGs (640x480 by default; --size 4000x3000 for camera photos) with the same
architecture (ViT-B-32 by default, seeded random weights: speed does not depend on the weight values, and
this runs offline).

- naive: decode one image, one fp32 forward pass per image (what a simple embedding function does);
- clipstore fp32: `Store.ingest` with batching and threaded decoding, fp32;
- clipstore auto: `Store.ingest` as users get it (bf16 on CPUs with native bf16).
Both clipstore rows decode large JPEGs at reduced DCT scale (see imaging.decode_image's min_side).

    python benchmarks/ingest_throughput.py [--n 96] [--size 640x480] [--arch ViT-B-32]

Prints a Markdown table of images/s and the ratio to the naive loop.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

import clipstore
from clipstore.encoders.clip import ClipEncoder
from clipstore.imaging import load_image
from clipstore.encoders.identity import resolve_model


def write_photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    rng = random.Random(0)
    width, height = size
    paths = []
    for index in range(n):
        image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        pen = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = rng.randrange(width), rng.randrange(height)
            w, h = rng.randrange(width // 30, width // 3), rng.randrange(height // 30, height // 3)
            pen.ellipse((x, y, x + w, y + h), fill=tuple(rng.randrange(256) for _ in range(3)))
        path = folder / f"photo{index:04d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def naive(paths: list[Path], spec: str) -> float:
    encoder = ClipEncoder(resolve_model(spec), device="cpu", precision="fp32")
    encoder.encode_images([load_image(paths[0]).image])  # warm-up
    start = time.perf_counter()
    for path in paths:
        encoder.encode_images([load_image(path).image])
    return len(paths) / (time.perf_counter() - start)


def pipeline(folder: Path, paths: list[Path], spec: str, precision: str, workdir: Path) -> float:
    store = clipstore.connect(workdir / f"{precision}.clipstore", model=spec, device="cpu", precision=precision)
    store.encoder.encode_images([load_image(paths[0]).image])  # warm-up (model load is not ingest time)
    start = time.perf_counter()
    report = store.ingest(folder)
    elapsed = time.perf_counter() - start
    assert report.added == len(paths), report
    return len(paths) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the JPEGs")
    parser.add_argument("--arch", default="ViT-B-32")
    args = parser.parse_args()
    size = tuple(int(part) for part in args.size.lower().split("x"))
    spec = f"{args.arch}:random"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        folder = workdir / "photos"
        folder.mkdir()
        paths = write_photos(folder, args.n, size)
        rows = [("naive loop, fp32, 1 image per pass", naive(paths, spec))]
        rows.append(("clipstore ingest, fp32", pipeline(folder, paths, spec, "fp32", workdir)))
        rows.append(("clipstore ingest, precision=auto", pipeline(folder, paths, spec, "auto", workdir)))
    base = rows[0][1]
    print(f"{args.n} JPEGs {args.size}, {spec}, CPU\n")
    print("| pipeline | images/s | × naive |")
    print("| --- | ---: | ---: |")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
