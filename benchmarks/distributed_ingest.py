"""Distributed ingest: the same folder of JPEGs ingested by the single-process path and by Ray with N CPU workers
on this machine, side by side (issue #17: Ray's overhead must stay below 25% here).

Both rows ingest the same folder (2,000 photo-like 640x480 JPEGs by default, written once and reused from
--cache) into a new store with the same model (ViT-B-32 with seeded random weights by default: speed does not
depend on the weight values, and this runs offline) and the same precision:

- single process: `Store.ingest(folder)` (read, hash, decode in threads; embed on every core; commit);
- Ray: `Store.ingest(folder, engine="ray")` on a local Ray cluster with --cpus CPUs (127.0.0.1 only, no
  dashboard), --workers embed actors (default one per CPU). The cluster is started before the clock runs
  (its start is reported on its own); the time includes starting the pipeline's workers and loading the model
  in them, listing, the one commit and the prompt-bank/index steps every ingest ends with.

The two stores are compared (same ids and paths, vectors at cosine >= 0.999) before the table is printed.

    python benchmarks/distributed_ingest.py [--n 2000] [--size 640x480] [--model ViT-B-32:random] [--cpus 2]

Prints a Markdown table: seconds, images/s, and the Ray row's time relative to the single process.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--workers", type=int, default=None, help="Ray embed workers (default: one per CPU)")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the photos (reused) and the stores")
    args = parser.parse_args(argv)
    width, height = (int(part) for part in args.size.lower().split("x"))

    workdir = args.cache or Path(tempfile.mkdtemp(prefix="clipstore-distributed-"))
    folder = workdir / f"photos-{args.n}-{width}x{height}"
    if len(list(folder.glob("*.jpg"))) != args.n:
        folder.mkdir(parents=True, exist_ok=True)
        write_photos(folder, args.n, (width, height))
    runs = workdir / f"stores-{time.time_ns()}"

    import ray

    from clipstore.ingest.distributed import RayOptions, start_local_ray

    started_here = not ray.is_initialized()
    cluster_start = time.perf_counter()
    if started_here:
        start_local_ray(args.cpus)
    cluster_seconds = time.perf_counter() - cluster_start
    cpus = int(ray.cluster_resources().get("CPU", 0))
    try:
        local_seconds, local = ingest_once(folder, runs / "local.clipstore", args.model)
        ray_seconds, distributed = ingest_once(
            folder, runs / "ray.clipstore", args.model, engine="ray", ray=RayOptions(workers=args.workers)
        )
    finally:
        if started_here:
            ray.shutdown()
    agreement = same_store(distributed, local)

    workers = args.workers or cpus
    lines = [
        f"{args.n} JPEGs {width}x{height}, {args.model}, CPU: {cpu_name()}",
        f"Ray: a local cluster of {cpus} CPUs ({workers} embed worker{'s' if workers > 1 else ''}), started in "
        f"{cluster_seconds:.1f} s (not counted); stores equal, vectors agree at cosine >= {agreement:.4f}",
        "",
        "| ingest | seconds | images/s | vs single process |",
        "| --- | ---: | ---: | ---: |",
        f"| single process | {local_seconds:.2f} | {args.n / local_seconds:.1f} | 1.00 |",
        f"| Ray, {cpus} CPUs | {ray_seconds:.2f} | {args.n / ray_seconds:.1f} | {ray_seconds / local_seconds:.2f} |",
    ]
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
