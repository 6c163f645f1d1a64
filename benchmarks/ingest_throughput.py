"""Ingest throughput: clipstore's ingest against the model's forward pass alone, LanceDB's own open-clip
embedding function and a naive per-image loop, side by side in one run.

Every row embeds the same folder of JPEGs (640x480 by default; --size 4000x3000 for camera photos) with the same
architecture (ViT-B-32 by default, seeded random weights: speed does not depend on the weight values, and this
runs offline):

- forward-only: the model alone on preprocessed pixels already in memory, batches of 32, per precision, run
  as one call on all of torch's threads and as ingest's two lanes run it (two threads, each on half the cores,
  each with half the batch) — the better of the two is the ceiling any ingest can reach at that precision;
- forward-only, cached tower: the same with the model's cached vision tower run by torch
  (`encoders/torch_tower.py`, what ingest embeds with once the tower is cached here), fp32 and bf16;
- clipstore ingest: `Store.ingest` into a new store (read, hash, decode, resize, embed, commit), fp32 (what a
  CPU without native bf16 gets), `precision="auto"` (what users get: bf16 on CPUs with native bf16) and the
  opt-in `precision="int8"`; fp32 and auto also with one lane and open_clip's full model (the pipeline before
  lanes and the cached tower), and auto with lanes but the full model;
- LanceDB open-clip: LanceDB's own `open-clip` embedding function (`lancedb.embeddings` registry) computing the
  vector column while `table.add` adds the image paths to a LanceDB table. It loads pretrained weights through
  open_clip, so it is given the same seeded random weights as a local checkpoint file (offline);
- naive loop: decode one image, one fp32 forward pass per image.

    python benchmarks/ingest_throughput.py [--n 128] [--size 640x480] [--arch ViT-B-32] [--rounds 1]

Prints a Markdown table: images/s, the share of the forward-only rate at the row's precision, and the ratio to
LanceDB's function. With --rounds N every row runs N times, interleaved, and keeps its best rate (the machine
may be shared; the best of a few runs is the least disturbed one).
"""

from __future__ import annotations

import argparse
import itertools
import random
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

import clipstore
from clipstore.encoders.clip import ClipEncoder, cpu_supports_bf16, resolve_precision
from clipstore.encoders.identity import resolve_model
from clipstore.imaging import load_image

FORWARD_BATCH = 32
_STORES = itertools.count()  # a new store for every ingest run


def write_photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """n photo-like JPEGs (random ellipses over a plain background, quality 90) named photo0000.jpg, ..."""
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


def cpu_name() -> str:
    """The CPU's model name and whether it has native bf16 (AVX-512 BF16, AMX)."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    import os

    native = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags]
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, {os.cpu_count()} cores, {simd}, {'+'.join(native) if native else 'no native bf16'}"


def embedder(spec: str, precision: str, tower: bool):
    """open_clip's full model (`ClipEncoder`), or with `tower` the model's cached vision tower run by torch
    (`TorchVisionTower`, what ingest uses once the tower is cached; loading the full model caches it)."""
    encoder = ClipEncoder(resolve_model(spec), device="cpu", precision=precision)
    if not tower:
        return encoder
    from clipstore.encoders.torch_tower import cached_torch_tower

    cached = cached_torch_tower(resolve_model(spec), device="cpu", precision=precision)
    if cached is None:
        raise SystemExit(f"{spec} has no cached vision tower (a model the numpy towers cannot represent)")
    return cached


def forward_only(paths: list[Path], spec: str, precision: str, tower: bool = False) -> Callable[[], float]:
    """The model alone: one batch of preprocessed pixels in memory, run until len(paths) images are embedded."""
    encoder = embedder(spec, precision, tower)
    batch = [np.asarray(encoder.prepare(load_image(paths[i % len(paths)]).image)) for i in range(FORWARD_BATCH)]
    encoder.encode_prepared(batch)  # warm-up
    passes = max(1, round(len(paths) / FORWARD_BATCH))

    def run() -> float:
        start = time.perf_counter()
        for _ in range(passes):
            encoder.encode_prepared(batch)
        return passes * FORWARD_BATCH / (time.perf_counter() - start)

    return run


def forward_only_lanes(paths: list[Path], spec: str, precision: str, tower: bool = False, lanes: int = 2) -> Callable[[], float]:
    """The model alone as ingest's lanes run it: `lanes` threads, each on its share of torch's threads, each
    embedding its share of a batch of 32 preprocessed images at the same time (no decoding)."""
    from concurrent.futures import ThreadPoolExecutor

    from clipstore.encoders.clip import limit_torch_threads, torch_threads

    encoder = embedder(spec, precision, tower)
    share = FORWARD_BATCH // lanes
    batch = [np.asarray(encoder.prepare(load_image(paths[i % len(paths)]).image)) for i in range(share)]
    passes = max(lanes, round(len(paths) / share))
    threads = torch_threads()
    pool = ThreadPoolExecutor(lanes, initializer=limit_torch_threads, initargs=(max(1, threads // lanes),))
    list(pool.map(lambda _: encoder.encode_prepared(batch, concurrent=True), range(lanes)))  # warm-up
    limit_torch_threads(threads)

    def run() -> float:
        start = time.perf_counter()
        list(pool.map(lambda _: encoder.encode_prepared(batch, concurrent=True), range(passes)))
        rate = passes * share / (time.perf_counter() - start)
        limit_torch_threads(threads)  # MKL's count is process-wide
        return rate

    return run


def clipstore_ingest(
    folder: Path, paths: list[Path], spec: str, precision: str, workdir: Path, lanes: int | None = None, full_model: bool = False
) -> Callable[[], float]:
    """`Store.ingest` of the folder into a new store (model loaded and warmed up beforehand); `lanes`: force a
    number of lanes instead of the default; `full_model`: embed with open_clip's model even though its vision
    tower is cached (the ingest before the cached tower was used)."""
    import functools

    import clipstore.encoders.torch_tower as torch_tower
    import clipstore.store.facade as facade
    from clipstore.encoders.clip import load_clip_encoder
    from clipstore.ingest.run import IngestOptions

    encoder = clipstore.connect(workdir / "warm-up.clipstore", model=spec, device="cpu", precision=precision).encoder
    encoder.encode_images([load_image(paths[0]).image])  # warm-up: loading the model is not ingest time

    def run() -> float:
        store = clipstore.connect(workdir / f"store-{next(_STORES)}.clipstore", model=spec, device="cpu", precision=precision)
        facade.IngestOptions = IngestOptions if lanes is None else functools.partial(IngestOptions, lanes=lanes)
        load_image_embedder = torch_tower.load_image_embedder
        if full_model:
            torch_tower.load_image_embedder = load_clip_encoder
        try:
            start = time.perf_counter()
            report = store.ingest(folder)
            elapsed = time.perf_counter() - start
        finally:
            facade.IngestOptions = IngestOptions
            torch_tower.load_image_embedder = load_image_embedder
        assert report.added == len(paths) and not report.failed, report
        return len(paths) / elapsed

    return run


def lancedb_open_clip(paths: list[Path], spec: str, workdir: Path) -> Callable[[], float]:
    """LanceDB's `open-clip` embedding function filling a table's vector column as the image paths are added."""
    import lancedb
    import torch
    from lancedb.embeddings import get_registry
    from lancedb.pydantic import LanceModel, Vector

    from clipstore.encoders.clip import create_model

    identity = resolve_model(spec)
    checkpoint = workdir / f"{identity.architecture}-random.pt"
    if not checkpoint.exists():  # the same seeded random weights as clipstore's rows, as a local checkpoint
        torch.save(create_model(identity).state_dict(), checkpoint)
    function = get_registry().get("open-clip").create(name=identity.architecture, pretrained=str(checkpoint), device="cpu")

    class Images(LanceModel):
        image_uri: str = function.SourceField()
        vector: Vector(function.ndims()) = function.VectorField()

    db = lancedb.connect(workdir / "lancedb")
    function.compute_source_embeddings([str(paths[0])])  # warm-up
    runs = iter(range(1_000_000))

    def run() -> float:
        table = db.create_table(f"images{next(runs)}", schema=Images)
        start = time.perf_counter()
        table.add([{"image_uri": str(path)} for path in paths])
        elapsed = time.perf_counter() - start
        assert table.count_rows() == len(paths)
        return len(paths) / elapsed

    return run


def naive_loop(paths: list[Path], spec: str) -> Callable[[], float]:
    """Decode one image, run one fp32 forward pass, next image."""
    encoder = ClipEncoder(resolve_model(spec), device="cpu", precision="fp32")
    encoder.encode_images([load_image(paths[0]).image])  # warm-up

    def run() -> float:
        start = time.perf_counter()
        for path in paths:
            encoder.encode_images([load_image(path).image])
        return len(paths) / (time.perf_counter() - start)

    return run


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="number of JPEGs")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the JPEGs")
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--rounds", type=int, default=1, help="run every row this many times, keep the best")
    args = parser.parse_args(argv)
    size = tuple(int(part) for part in args.size.lower().split("x"))
    spec = f"{args.arch}:random"
    auto = resolve_precision("auto", "cpu")
    precisions = ["fp32"] + (["bf16"] if cpu_supports_bf16() else []) + ["int8"]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        folder = workdir / "photos"
        folder.mkdir()
        paths = write_photos(folder, args.n, size)
        # (name, precision, run); rows of one precision compare to that precision's forward-only rate.
        rows = []
        for p in precisions:
            rows.append((f"forward-only, batch {FORWARD_BATCH}", p, forward_only(paths, spec, p)))
            rows.append((f"forward-only, 2 lanes x batch {FORWARD_BATCH // 2}", p, forward_only_lanes(paths, spec, p)))
            if p != "int8":  # the opt-in int8 path runs open_clip's quantised modules
                rows.append((f"forward-only, cached tower, batch {FORWARD_BATCH}", p, forward_only(paths, spec, p, tower=True)))
                rows.append((f"forward-only, cached tower, 2 lanes x batch {FORWARD_BATCH // 2}", p, forward_only_lanes(paths, spec, p, tower=True)))
        rows += [
            ("clipstore ingest, one lane, full model (before)", "fp32", clipstore_ingest(folder, paths, spec, "fp32", workdir, lanes=1, full_model=True)),
            ("clipstore ingest", "fp32", clipstore_ingest(folder, paths, spec, "fp32", workdir)),
            (f"clipstore ingest, precision=auto ({auto}), one lane, full model (before)", auto, clipstore_ingest(folder, paths, spec, "auto", workdir, lanes=1, full_model=True)),
            (f"clipstore ingest, precision=auto ({auto}), full model", auto, clipstore_ingest(folder, paths, spec, "auto", workdir, full_model=True)),
            (f"clipstore ingest, precision=auto ({auto})", auto, clipstore_ingest(folder, paths, spec, "auto", workdir)),
            ("clipstore ingest, precision=int8 (opt-in)", "int8", clipstore_ingest(folder, paths, spec, "int8", workdir)),
            ("LanceDB `open-clip` function, table.add", "fp32", lancedb_open_clip(paths, spec, workdir)),
            ("naive loop, 1 image per pass", "fp32", naive_loop(paths, spec)),
        ]
        best = [0.0] * len(rows)
        for _ in range(max(1, args.rounds)):
            for index, (_, _, run) in enumerate(rows):
                best[index] = max(best[index], run())
    forward: dict[str, float] = {}  # the best forward-only rate of each precision
    for (name, precision, _), rate in zip(rows, best):
        if name.startswith("forward-only"):
            forward[precision] = max(forward.get(precision, 0.0), rate)
    lancedb_rate = next(rate for (name, _, _), rate in zip(rows, best) if name.startswith("LanceDB"))
    lines = [
        f"{args.n} JPEGs {args.size}, {spec}, CPU: {cpu_name()}; best of {max(1, args.rounds)} round(s)",
        "",
        "| pipeline | precision | images/s | % of best forward-only (same precision) | × LanceDB open-clip |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for (name, precision, _), rate in zip(rows, best):
        lines.append(
            f"| {name} | {precision} | {rate:.1f} | {100 * rate / forward[precision]:.0f}% | {rate / lancedb_rate:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
