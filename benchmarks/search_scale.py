"""Search at scale: LanceDB's flat scan, clipstore exact and (when the store has one) clipstore indexed search,
side by side in one run on a real store of N images, plus the cold costs a user pays in a fresh process.

The store is a real clipstore store (`clipstore.connect`), its `images` and `files` rows written straight into
the tables in large batches (the schemas of `clipstore.db.layout`). The vectors are clustered, as real
collections are (uniform random vectors make every index look wrong): the cluster centres are clipstore-mini
embeddings of rendered world images (`clipstore.world`), each row a centre plus a small Gaussian perturbation,
renormalised. With `--dim 512` the centres are mapped into 512 dimensions by a random isometry (cosines
between centres are kept) and the store's model is `ViT-B-32:random` (ViT-B-32-sized vectors). The queries are
Q more perturbed centres held out of the store. Each image has one path, spread over `--folders` folders under
/clipstore-bench/, so `--prefix` keeps 1/folders of the rows.

Measured, over the same queries:
- LanceDB flat scan: `table.search(q).distance_type("cosine").limit(10)` (exact; bypasses any vector index);
- clipstore exact: `Store.search_vector` (with `exact=True` when the store is indexed), with and without a
  path prefix;
- clipstore indexed: `Store.search_vector` when the images table carries a vector index (`--build-index` asks
  `Store.build_index` for one, where this clipstore has it);
- a fresh process: import + `connect` + the first `search_vector`; a cold `clipstore search` CLI process
  (median wall of --runs runs), with and without `--prefix`; peak RSS of those processes.
p50/p95 latency in ms; recall@10 against exact numpy top-10 over the store's vectors.

The built store is cached under --cache (default ~/.cache/clipstore-bench/search-scale-N, -dD for other dims;
the centres' embeddings in centres/ beside it), so re-runs skip the build.

With --real, the rows and queries are real clipstore-mini embeddings of rendered world images (every row its
own image, no perturbation). --sweep adds rows for the index queried at other nprobes/ef settings.

    python benchmarks/search_scale.py [--n 200000] [--dim 256|512] [--real] [--queries 200] [--cache DIR]
        [--build-index] [--sweep] [--no-cli]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_BATCH = 50_000
_ROOT = "/clipstore-bench"
_CLI_TEXT = "a small red circle on a blue background"
_FIRST_QUERY = """
import sys
import numpy as np
import clipstore
clipstore.connect(sys.argv[1], create=False).search_vector(np.load(sys.argv[2])[0], 10)
"""


def cpu_name() -> str:
    """The CPU's model name, core count and the vector extensions that matter for search and inference."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    features = [flag for flag in wanted if flag in flags]
    return f"{model}, {os.cpu_count()} cores" + (f" ({', '.join(features)})" if features else "")


def cluster_centres(count: int, cache: Path) -> np.ndarray:
    """clipstore-mini embeddings (count, 256) of `count` rendered world images, cached in `cache`."""
    path = cache / f"centres-mini-{count}.npy"
    if not path.exists():
        from clipstore.encoders.clip import ClipEncoder
        from clipstore.encoders.identity import resolve_model
        from clipstore.world.samples import generate

        encoder = ClipEncoder(resolve_model("clipstore-mini"), device="cpu", precision="fp32")
        images = [sample.image for sample in generate(count, seed=13, size=64)]
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".tmp.npy"), encoder.encode_images(images))
        path.with_suffix(".tmp.npy").rename(path)  # whole or absent
    return np.load(path)


def real_embeddings(count: int, seed: int, cache: Path) -> np.ndarray:
    """clipstore-mini embeddings (count, 256) of `count` rendered world images drawn with `seed`, cached."""
    path = cache / f"real-mini-{seed}-{count}.npy"
    if not path.exists():
        from clipstore.encoders.clip import ClipEncoder
        from clipstore.encoders.identity import resolve_model
        from clipstore.world.samples import generate

        encoder = ClipEncoder(resolve_model("clipstore-mini"), device="cpu", precision="fp32")
        samples = generate(count, seed=seed, size=64)
        chunks = []
        while batch := [sample.image for sample in itertools.islice(samples, 5000)]:
            chunks.append(encoder.encode_images(batch))
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".tmp.npy"), np.concatenate(chunks))
        path.with_suffix(".tmp.npy").rename(path)  # whole or absent
    return np.load(path)


def perturbed(centres: np.ndarray, count: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """`count` unit vectors, each a random centre plus Gaussian noise of expected norm `spread`."""
    picks = rng.integers(len(centres), size=count)
    noise = rng.standard_normal((count, centres.shape[1]), dtype=np.float32) * (spread / np.sqrt(centres.shape[1]))
    vectors = centres[picks] + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def folder_of(row: int, folders: int) -> str:
    return f"{_ROOT}/folder-{row % folders:02d}/"


def build_store(args: argparse.Namespace, cache: Path) -> bool:
    """Build the benchmark store (cache/store.clipstore) and its held-out queries (cache/queries.npy), unless
    the cache already holds them for the same parameters. True when it built them."""
    import pyarrow as pa

    import clipstore
    from clipstore.db import layout, tables

    params = {key: getattr(args, key) for key in ("n", "dim", "queries", "centres", "spread", "folders", "seed")}
    if args.real:  # only then: stores cached before --real existed stay valid
        params["real"] = True
    params["first_path"] = True  # stores cached before migration 0006 lack it: rebuilt
    store_path, marker = cache / "store.clipstore", cache / "build.json"
    if marker.exists() and json.loads(marker.read_text()) == params:
        return False
    if store_path.exists():
        import shutil

        shutil.rmtree(store_path)
    rng = np.random.default_rng(args.seed)
    if args.real:
        real_rows = real_embeddings(args.n, 13 + args.seed, cache.parent / "real")
        np.save(cache / "queries.npy", real_embeddings(args.queries, 1013 + args.seed, cache.parent / "real"))
    else:
        centres = cluster_centres(args.centres, cache.parent / "centres")
        if args.dim != centres.shape[1]:
            isometry, _ = np.linalg.qr(rng.standard_normal((args.dim, centres.shape[1])))  # orthonormal columns
            centres = (centres @ isometry.T.astype(np.float32)).astype(np.float32)
        np.save(cache / "queries.npy", perturbed(centres, args.queries, args.spread, rng))

    store = clipstore.connect(store_path, model="clipstore-mini" if args.dim == 256 else "ViT-B-32:random")
    if store.model.embed_dim != args.dim:
        raise SystemExit(f"--dim {args.dim}: use 256 (clipstore-mini) or 512 (ViT-B-32)")
    images, files = tables.open_images(store.db), store.db.open_table(layout.FILES)
    now = tables.utc_now()
    for start in range(0, args.n, _BATCH):
        rows = range(start, min(start + _BATCH, args.n))
        ids = [hashlib.sha256(f"search-scale:{args.seed}:{row}".encode()).hexdigest() for row in rows]
        vectors = real_rows[rows.start : rows.stop] if args.real else perturbed(centres, len(rows), args.spread, rng)
        paths = [f"{folder_of(row, args.folders)}{row:08d}.png" for row in rows]
        image_values = {
            "id": ids,
            "width": [64] * len(rows),
            "height": [64] * len(rows),
            "format": ["PNG"] * len(rows),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), args.dim),
            "added_at": [now] * len(rows),
            layout.PROMPT_OFFERED: [True] * len(rows),
            layout.FIRST_PATH: paths,
        }
        file_values = {
            "path": paths,
            "size": [1000] * len(rows),
            "mtime_ns": [0] * len(rows),
            "image_id": ids,
            "ingested_at": [now] * len(rows),
        }
        images.add(_arrow_rows(images.schema, image_values, len(rows)))
        files.add(_arrow_rows(files.schema, file_values, len(rows)))
    marker.write_text(json.dumps(params))  # last: an interrupted build is rebuilt
    return True


def _arrow_rows(schema, values: dict, count: int):
    """A table of `schema`: the given columns, every other column null."""
    import pyarrow as pa

    columns = [pa.array(values[f.name], type=f.type) if f.name in values else pa.nulls(count, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def exact_top10(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, keep: np.ndarray | None = None) -> list[set[str]]:
    """The exact top-10 ids per query (rows where `keep` is true, when given): the recall reference."""
    candidates = np.arange(len(ids)) if keep is None else np.flatnonzero(keep)
    kept = vectors if keep is None else vectors[candidates]
    truth = []
    for query in queries:
        scores = kept @ query
        top = candidates[np.argpartition(-scores, min(10, len(scores)) - 1)[:10]]
        truth.append(set(ids[top]))
    return truth


def timed(search, queries: np.ndarray, truth: list[set[str]]) -> dict:
    """p50/p95 ms and recall@10 of `search(query) -> ids` over `queries`."""
    times, recalls = [], []
    for query, expected in zip(queries, truth):
        start = time.perf_counter()
        found = search(query)
        times.append((time.perf_counter() - start) * 1000)
        recalls.append(len(set(found) & expected) / len(expected))
    return {"count": len(times), "p50": np.percentile(times, 50), "p95": np.percentile(times, 95), "recall": float(np.mean(recalls))}


_LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "wall": wall, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, out)
"""


def run_child(command: list[str], cwd: Path) -> tuple[float, float]:
    """Run `command` as a fresh process: (its wall s, its peak RSS in MB). Fails loudly when it fails.

    A small launcher process starts it and reads its rusage: a child started straight from this process would
    report this process's (large) peak RSS, which Linux carries over into the child's at exec.
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        result = subprocess.run([sys.executable, "-c", _LAUNCHER, str(report), *command], cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        measured = json.loads(report.read_text()) if report.exists() else {"code": result.returncode}
        if result.returncode != 0 or measured["code"] != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
        return measured["wall"], measured["maxrss_kib"] / 1024  # ru_maxrss is in KiB on Linux


def cold_runs(command: list[str], runs: int, cwd: Path) -> dict:
    """Median and max wall (ms) and peak RSS (MB) of `runs` fresh processes of `command`."""
    results = [run_child(command, cwd) for _ in range(runs)]
    walls = [wall * 1000 for wall, _ in results]
    return {"count": runs, "p50": statistics.median(walls), "p95": max(walls), "rss": max(rss for _, rss in results)}


def sweep(images, queries: np.ndarray, truth: list[set[str]]) -> list[tuple[str, dict]]:
    """The index queried at other settings than clipstore's (nprobes x ef), to show what the chosen ones trade:
    rows "LanceDB index, nprobes P, ef E" (candidates re-scored as clipstore's)."""
    from clipstore.db import vector_index as vindex

    config = vindex.vector_index(images, "embedding")
    partitions = vindex.num_partitions(int(config.num_indexed_rows))
    rows = []
    for probes in sorted({min(partitions, p) for p in (5, 10, 20, max(20, partitions // 8), max(20, partitions // 4))}):
        for ef in (50, 100, 150):
            def search(query, policy=vindex.QueryPolicy(min_nprobes=probes, share=0.0, ef=ef)):
                found = vindex.indexed_search(images, "embedding", config, query, 10, ["id"], policy=policy)
                return found.column("id").to_pylist()

            rows.append((f"LanceDB index, nprobes {probes} of {partitions}, ef {ef}", timed(search, queries, truth)))
    return rows


def main(argv: list[str] | None = None) -> str:
    """Build (or reuse) the store, measure, print the Markdown table and return it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="image rows in the store")
    parser.add_argument("--dim", type=int, default=256, choices=(256, 512), help="256: clipstore-mini; 512: ViT-B-32")
    parser.add_argument("--queries", type=int, default=200, help="held-out queries (Q)")
    parser.add_argument("--flat-queries", type=int, help="measure LanceDB's flat scan on only the first F queries (it is slow)")
    parser.add_argument("--centres", type=int, default=2000, help="rendered images whose embeddings are the cluster centres")
    parser.add_argument("--spread", type=float, default=0.3, help="expected norm of a row's perturbation of its centre")
    parser.add_argument("--folders", type=int, default=8, help="folders the paths are spread over (--prefix keeps one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", action="store_true", help="rows and queries are real clipstore-mini embeddings of "
                        "rendered world images (no perturbation; --dim 256)")
    parser.add_argument("--sweep", action="store_true", help="also measure the index at other nprobes/ef settings")
    parser.add_argument("--cache", type=Path, help="where the built store is kept (default ~/.cache/clipstore-bench/search-scale-N)")
    parser.add_argument("--build-index", action="store_true", help="ask Store.build_index for a vector index first, timed")
    parser.add_argument("--runs", type=int, default=3, help="cold CLI processes per variant (the median is reported)")
    parser.add_argument("--no-cli", action="store_true", help="skip the fresh-process and cold CLI measurements")
    args = parser.parse_args(argv)

    import clipstore
    from clipstore.db import layout, tables
    from clipstore.db import vector_index as vindex

    if args.real and args.dim != 256:
        raise SystemExit("--real: the embeddings are clipstore-mini's, 256 dims")
    suffix = ("" if args.dim == 256 else f"-d{args.dim}") + ("-real" if args.real else "")
    cache = (args.cache or Path.home() / ".cache" / "clipstore-bench" / f"search-scale-{args.n}{suffix}").expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    built = build_store(args, cache)
    build_s = time.perf_counter() - started
    store_path = cache / "store.clipstore"
    store = clipstore.connect(store_path, create=False)
    images = tables.open_images(store.db)

    build_index_s = None
    if args.build_index:
        if not hasattr(store, "build_index"):
            raise SystemExit("--build-index: this clipstore has no Store.build_index yet")
        started = time.perf_counter()
        store.build_index()
        build_index_s = time.perf_counter() - started
        images = tables.open_images(store.db)
    config = vindex.vector_index(images, "embedding")
    index_type = config.index_type if config is not None else None

    queries = np.load(cache / "queries.npy")
    data = tables.read_columns(images, ["id", "embedding"])
    ids = np.asarray(data.column("id").to_pylist(), dtype=object)
    vectors = tables.vector_matrix(data.column("embedding"))
    del data
    prefix = folder_of(0, args.folders)
    files = tables.read_columns(store.db.open_table(layout.FILES), ["path", "image_id"])
    in_prefix = {i for p, i in zip(files.column("path").to_pylist(), files.column("image_id").to_pylist()) if p.startswith(prefix)}
    truth = exact_top10(vectors, ids, queries)
    prefix_truth = exact_top10(vectors, ids, queries, np.fromiter((i in in_prefix for i in ids), bool, len(ids)))
    del vectors

    def flat(query):
        builder = images.search(query).distance_type("cosine").limit(10).select(["id", "_distance"])
        return [row["id"] for row in (builder.bypass_vector_index() if index_type else builder).to_list()]

    exact_kw = {"exact": True} if index_type else {}

    def clipstore_search(path_prefix=None, **kw):
        return lambda query: [hit.id for hit in store.search_vector(query, 10, path_prefix=path_prefix, **kw)]

    store.search_vector(queries[0], 10, **exact_kw)  # load once: the fresh-process row reports the first query
    flat_count = min(args.flat_queries or args.queries, args.queries)
    rows = [("LanceDB flat scan (exact)", timed(flat, queries[:flat_count], truth[:flat_count]))]
    rows.append(("clipstore exact (`search_vector`)", timed(clipstore_search(**exact_kw), queries, truth)))
    rows.append((f"clipstore exact, prefix `{prefix}`", timed(clipstore_search(prefix, **exact_kw), queries, prefix_truth)))
    if index_type:
        store.search_vector(queries[0], 10)
        rows.append((f"clipstore indexed ({index_type}), first pass", timed(clipstore_search(), queries, truth)))
        rows.append((f"clipstore indexed ({index_type}), warm (the same queries again)", timed(clipstore_search(), queries, truth)))
        rows.append((f"clipstore indexed, prefix `{prefix}`", timed(clipstore_search(prefix), queries, prefix_truth)))
    if index_type and args.sweep:
        rows.extend(sweep(images, queries, truth))
    if not args.no_cli:
        np.save(cache / "first-query.npy", queries[:1])
        probe = [sys.executable, "-c", _FIRST_QUERY, str(store_path), str(cache / "first-query.npy")]
        rows.append(("fresh process: import, connect, first `search_vector`", cold_runs(probe, args.runs, cache)))
        cli = [sys.executable, "-m", "clipstore.cli", "search", _CLI_TEXT, "--store", str(store_path), "-k", "10", "--json"]
        run_child(cli, cache)  # not counted: a machine's first search may fill clipstore's text-tower cache
        rows.append(("cold `clipstore search` CLI", cold_runs(cli, args.runs, cache)))
        rows.append(("cold `clipstore search --prefix` CLI", cold_runs([*cli, "--prefix", prefix], args.runs, cache)))

    index_line = f"{index_type}" + (f", built in {build_index_s:.1f} s" if build_index_s is not None else "") if index_type else "none"
    lines = [
        f"Search at scale — {datetime.date.today().isoformat()}, {cpu_name()}",
        f"{args.n:,} images × {args.dim} dims ({store.model.architecture}), "
        + ("real clipstore-mini embeddings of rendered images" if args.real else f"{args.centres} clusters, spread {args.spread}")
        + f"; top-10 cosine; vector index: {index_line}; store {f'built in {build_s:.0f} s' if built else 'reused from ' + str(cache)}",
        "",
        "| path | runs | p50 ms | p95 ms | recall@10 | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in rows:
        recall = f"{result['recall']:.3f}" if "recall" in result else "–"
        rss = f"{result['rss']:.0f}" if "rss" in result else "–"
        lines.append(f"| {name} | {result['count']} | {result['p50']:.1f} | {result['p95']:.1f} | {recall} | {rss} |")
    if not args.no_cli:
        lines.append(f"\nCold rows: wall time of the whole process (p50 = median, p95 = slowest of {args.runs}).")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
