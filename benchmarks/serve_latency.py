"""`clipstore serve`'s warm latency: a text search through HTTP beside the same search in-process.

A real store of N rendered world images (`clipstore.world`, ingested with --model, default clipstore-mini; cached
under --cache) is served by a real `clipstore serve --port 0` process on 127.0.0.1, and the same text queries
(fresh render-world prompts, not the stored ones) are timed:

- in-process: `store.search_text(q, k)` in this process (warm: the model and vectors loaded);
- HTTP JSON: `GET /search?q=...&k=...` with `Accept: application/json`, over one kept-alive connection;
- HTTP HTML: the same request as the page makes it (the results fragment htmx swaps in);
- a cached thumbnail: `GET /image/{id}/thumb` of the first hit (the page loads k of them per search).

Each query runs each way once, in turn; the first --warmup queries are not counted. Both processes share the
machine's cores. The hits through HTTP are checked to equal the in-process ones.

    python benchmarks/serve_latency.py [--n 1000] [--queries 200] [--k 20] [--model clipstore-mini] [--cache DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name and core count."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def build_store(n: int, model: str, cache: Path):
    """The cached store of n rendered images (built on the first run)."""
    import clipstore
    from clipstore.world import render_folder

    images, path = cache / "images", cache / "store.clipstore"
    if not path.exists():
        render_folder(images, n, seed=7)
        clipstore.connect(path, model=model).ingest(images)
    return clipstore.connect(path, create=False)


def queries(count: int) -> list[str]:
    """Fresh render-world prompts (held-out seed and split), as a user would type them."""
    from clipstore.world import generate

    return [sample.prompt for sample in generate(count, seed=99, split="heldout", size=32)]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def start_server(store_path: str, cwd: Path) -> tuple[subprocess.Popen, str]:
    """A `clipstore serve` process on 127.0.0.1 (a free port) and its URL."""
    command = [sys.executable, "-m", "clipstore.cli", "serve", "--store", store_path, "--port", "0", "--json"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    line = child.stdout.readline()
    if not line:
        child.wait(timeout=30)
        raise RuntimeError(f"clipstore serve did not start: {child.stderr.read()}")
    return child, json.loads(line)["url"]


def main(argv: list[str] | None = None) -> str:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images in the store")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--model", default="clipstore-mini")
    parser.add_argument("--cache", type=Path, help="default ~/.cache/clipstore-bench/serve-N-MODEL")
    args = parser.parse_args(argv)
    cache = args.cache or Path.home() / ".cache" / "clipstore-bench" / f"serve-{args.n}-{args.model.replace(':', '_').replace('/', '_')}"
    cache.mkdir(parents=True, exist_ok=True)

    store = build_store(args.n, args.model, cache)
    texts = queries(args.warmup + args.queries)
    child, url = start_server(store.path, cache)
    timings: dict[str, list[float]] = {"in-process": [], "json": [], "html": [], "thumb": []}
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            for number, text in enumerate(texts):
                start = time.perf_counter()
                hits = store.search_text(text, k=args.k)
                in_process = time.perf_counter() - start

                start = time.perf_counter()
                answer = http.get("/search", params={"q": text, "k": args.k}, headers={"Accept": "application/json"})
                as_json = time.perf_counter() - start
                answer.raise_for_status()
                served = [hit["id"] for hit in answer.json()["hits"]]
                assert served == [hit.id for hit in hits], f"HTTP and in-process hits differ for {text!r}"

                start = time.perf_counter()
                http.get("/search", params={"q": text, "k": args.k}).raise_for_status()
                as_html = time.perf_counter() - start

                http.get(f"/image/{hits[0].id}/thumb").raise_for_status()  # made and cached once
                start = time.perf_counter()
                http.get(f"/image/{hits[0].id}/thumb").raise_for_status()
                thumb = time.perf_counter() - start

                if number >= args.warmup:
                    for name, seconds in zip(timings, (in_process, as_json, as_html, thumb)):
                        timings[name].append(seconds * 1000)
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()

    names = {
        "in-process": "`store.search_text` in-process",
        "json": "`GET /search` (JSON) through HTTP",
        "html": "`GET /search` (the page's HTML fragment) through HTTP",
        "thumb": "`GET /image/{id}/thumb` (cached JPEG) through HTTP",
    }
    lines = [
        f"clipstore serve — {datetime.date.today().isoformat()}, {cpu_name()}",
        f"store: {store.count_images()} rendered images, {store.model.spec} ({store.model.embed_dim}-d), "
        f"exact search; text queries, k={args.k}; {args.queries} timed after {args.warmup} warm-up",
        "",
        "| path | runs | p50 ms | p95 ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, values in timings.items():
        lines.append(f"| {names[key]} | {len(values)} | {statistics.median(values):.1f} | {percentile(values, 95):.1f} |")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
