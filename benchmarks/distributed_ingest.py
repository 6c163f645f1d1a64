"""Distributed ingest: the same folder of JPEGs ingested by the single-process path and by Ray with N CPU workers
on this machine, side by side (issue #17: Ray's overhead must stay below 25% here).

Both rows ingest the same folder (2,000 photo-like 640x480 JPEGs by default, written once and reused from
--cache) into a new store with the same model (ViT-B-32 with seeded random weights by default: speed does not
depend on the weight values, and this runs offline) and the same precision:

- single process: `Store.ingest(folder)` (read, hash, decode in threads; embed on every core; commit);
- Ray: `Store.ingest(folder, engine="ray")` on a local Ray cluster with --cpus CPUs (127.0.0.1 only, no
  dashboard), in the default worker shape (one embed actor per machine, two lanes) and in the shape of each
  --workers count. The cluster is started before the clock runs (its start is reported on its own); the time
  includes starting the pipeline's workers and loading the model in them, listing, the one commit and the
  prompt-bank/index steps every ingest ends with.

Each Ray store is compared with the single process's (same ids and paths, vectors at cosine >= 0.999) before the
table is printed.

    python benchmarks/distributed_ingest.py [--n 2000] [--size 640x480] [--model ViT-B-32:random] [--cpus 2]
        [--workers default,2] [--rounds 3]

With --rounds N the rows run N times, interleaved (single, each Ray shape, single, ...), so that a slow spell of
a shared machine hits every row alike. Prints a Markdown table: median seconds, images/s, and the median of the
rounds' Ray/single time ratios (with each round's).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402

import clipstore  # noqa: E402
from clipstore.db import layout, tables  # noqa: E402
from ingest_throughput import cpu_name, write_photos  # noqa: E402


def ingest_once(folder: Path, store_path: Path, spec: str, **engine) -> tuple[float, "clipstore.Store"]:
    """Seconds to ingest `folder` into a new store at `store_path`, and the store."""
    store = clipstore.connect(store_path, model=spec, device="cpu")
    started = time.perf_counter()
    report = store.ingest(folder, **engine)
    seconds = time.perf_counter() - started
    if report.failed:
        raise SystemExit(f"{len(report.failed)} files failed: {report.failed[:3]}")
    if report.skipped_unchanged:
        raise SystemExit(f"{store_path} was not a new store: {report.skipped_unchanged} files were already in it")
    return seconds, store


def same_store(a: "clipstore.Store", b: "clipstore.Store") -> float:
    """The smallest cosine between the two stores' vectors of one id, after checking they hold the same rows."""
    def rows(store):
        images = tables.read_columns(tables.open_images(store.db), ["id", "embedding"])
        files = tables.read_columns(store.db.open_table(layout.FILES), ["path", "image_id"]).to_pylist()
        return dict(zip(images.column("id").to_pylist(), tables.vector_matrix(images.column("embedding")))), sorted((f["path"], f["image_id"]) for f in files)

    (vectors_a, files_a), (vectors_b, files_b) = rows(a), rows(b)
    if files_a != files_b or vectors_a.keys() != vectors_b.keys():
        raise SystemExit("the Ray ingest made another store than the single process")
    return min(float(np.dot(vectors_a[key], vectors_b[key])) for key in vectors_a)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="JPEGs in the folder")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of each JPEG")
    parser.add_argument("--model", default="ViT-B-32:random", help="model spec (default: ViT-B-32, seeded random weights)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument(
        "--workers", default="default", help="comma-separated Ray worker counts, one Ray row each ('default': "
        "the default shape, one lane worker per machine on CPUs), e.g. default,2"
    )
    parser.add_argument("--rounds", type=int, default=1, help="ingest every row this many times, interleaved; report the median")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the photos (reused) and the stores")
    args = parser.parse_args(argv)
    width, height = (int(part) for part in args.size.lower().split("x"))
    shapes = [None if item.strip() == "default" else int(item) for item in args.workers.split(",")]

    workdir = args.cache or Path(tempfile.mkdtemp(prefix="clipstore-distributed-"))
    folder = workdir / f"photos-{args.n}-{width}x{height}"
    if len(list(folder.glob("*.jpg"))) != args.n:
        folder.mkdir(parents=True, exist_ok=True)
        write_photos(folder, args.n, (width, height))
    runs = workdir / f"stores-{time.time_ns()}"

    import shutil

    import ray

    from clipstore.ingest.distributed import RayOptions, _cpu_nodes, start_local_ray, worker_shape

    started_here = not ray.is_initialized()
    cluster_start = time.perf_counter()
    if started_here:
        start_local_ray(args.cpus)
    cluster_seconds = time.perf_counter() - cluster_start
    cpus = int(ray.cluster_resources().get("CPU", 0))
    rows = [("single process", {})] + [
        (_shape_label(worker_shape(workers, gpus=0, cpu_nodes=_cpu_nodes()), workers), {"engine": "ray", "ray": RayOptions(workers=workers)})
        for workers in shapes
    ]
    seconds: dict[str, list[float]] = {label: [] for label, _ in rows}
    agreement = 1.0
    try:
        for round_ in range(args.rounds):  # interleaved: a slow spell of the machine hits every row alike
            local = None
            for row, (label, engine) in enumerate(rows):
                path = runs / f"round{round_}-row{row}.clipstore"  # a new store for every ingest
                elapsed, store = ingest_once(folder, path, args.model, **engine)
                seconds[label].append(elapsed)
                if local is None:
                    local = store
                elif round_ == 0:
                    agreement = min(agreement, same_store(store, local))
            shutil.rmtree(runs, ignore_errors=True)
    finally:
        if started_here:
            ray.shutdown()

    single = seconds["single process"]
    lines = [
        f"{args.n} JPEGs {width}x{height}, {args.model}, CPU: {cpu_name()}",
        f"Ray: a local cluster of {cpus} CPUs, started in {cluster_seconds:.1f} s (not counted); stores equal (every Ray "
        f"store holds the single process's rows), vectors agree at cosine >= {agreement:.4f}; {args.rounds} interleaved round(s), medians",
        "",
        "| ingest | seconds (median) | images/s | vs single process (median of the rounds' ratios) | each round's ratio |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for label, _ in rows:
        times = seconds[label]
        ratios = [t / s for t, s in zip(times, single)]
        lines.append(
            f"| {label} | {statistics.median(times):.2f} | {args.n / statistics.median(times):.1f} | "
            f"{statistics.median(ratios):.2f} | {', '.join(f'{r:.2f}' for r in ratios)} |"
        )
    table = "\n".join(lines)
    print(table)
    return table


def _shape_label(shape, workers: int | None) -> str:
    lanes = f", {shape.lanes} lanes" if shape.lanes > 1 else ""
    what = "default" if workers is None else f"--workers {workers}"
    return f"Ray ({what}): {shape.workers} worker{'s' if shape.workers > 1 else ''} × {shape.torch_threads} thread{'s' if shape.torch_threads > 1 else ''}{lanes}"


if __name__ == "__main__":
    main()
