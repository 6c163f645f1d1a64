"""Describe at scale: warm `describe` (Model B + a trained head), `prompts search` and Model B's neighbours on a
store whose prompt bank holds N prompts, with the bank's vector indexes (`clipstore.prompts.nearest`).

The store (built once, cached under --cache/describe-scale-N/):
- 240 rendered world images that carry their prompts, ingested (their prompts enter the bank through the gate),
  and one short head-only Model A trained on them (`store.train(epochs=20, freeze_vision=True, views=2)`);
- real prompts: the first `--real` prompts of `clipstore.world.corpus.prompt_corpus` (text-to-image style
  prompts from the render world's vocabulary and combinations), inserted through the bank's real path (MiniLM and
  clipstore-mini embeddings, the 0.85 dedup gate);
- the rest of the N rows, when N is larger: embedding 1M prompts for real takes hours on 2 CPU cores, so they
  are clustered vectors around the real prompts' embeddings: each copies a random real prompt's CLIP and MiniLM
  embeddings plus Gaussian noise (cosine about 0.8 to its centre, below the dedup threshold, as in a
  de-duplicated bank), renormalised, under the text "<that prompt> (variant i)". They are written to the bank
  table directly (not through the gate: this measures search, not insert);
- the bank's vector indexes, built with the store's index threshold set to --index-threshold when given.

Measured, warm (each query once before timing): describe of --queries held-out rendered images (decode, CLIP
encode, Model B over the indexed bank, Model A, the readable prompts); Model B's neighbour search alone and its
recall@k against an exact LanceDB scan (bypassing the index); `prompts search` and its recall@10.

    python benchmarks/describe_scale.py [--n 1000000] [--real 20000] [--queries 50] [--cache ~/.cache/clipstore-bench]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from search_scale import cpu_name  # noqa: E402

_WRITE_CHUNK = 50_000
VARIANT_COSINE = 0.8
"""Cosine of a clustered row to the real prompt it varies (below the 0.85 dedup threshold)."""


def build_store(path: Path, n: int, real: int, index_threshold: int | None, images: Path) -> str:
    """The cached store of the docstring at `path` (built when absent); returns "built" or "reused"."""
    import clipstore
    from clipstore.db import tables, vector_index
    from clipstore.prompts.nearest import update_bank_index
    from clipstore.world import render_folder
    from clipstore.world.corpus import prompt_corpus

    done = path / "describe-scale.done"
    if done.exists():
        return "reused"
    store = clipstore.connect(path / "store.clipstore", model="clipstore-mini")
    if index_threshold is not None:
        vector_index.set_index_threshold(store.db, index_threshold)
    render_folder(images / "world", 240, seed=11)
    store.ingest(images / "world")
    store.train(epochs=20, freeze_vision=True, views=2, patience=4)
    store.add_prompts(prompt_corpus(max(real, 1), seed=7), source="corpus")
    fill_with_variants(store, n)
    update_bank_index(store.db, tables.open_prompts(store.db))
    done.write_text("ok\n")
    return "built"


def fill_with_variants(store, n: int, seed: int = 0) -> None:
    """Top the bank up to n rows with clustered variants of its real prompts (see the module docstring)."""
    import pyarrow as pa

    from clipstore.db import tables
    from clipstore.prompts.bank import load_bank, prompt_id

    ids, texts, minilm, clip = load_bank(store.db, with_clip=True)
    missing = n - len(ids)
    if missing <= 0:
        return
    rng = np.random.default_rng(seed)
    table = tables.open_prompts(store.db)
    next_seq = len(ids) + 10**9  # after every real row
    now = tables.utc_now()
    for start in range(0, missing, _WRITE_CHUNK):
        count = min(_WRITE_CHUNK, missing - start)
        centres = rng.integers(0, len(ids), count)
        variants = [f"{texts[c]} (variant {start + i})" for i, c in enumerate(centres)]
        rows = pa.table(
            {
                "id": [prompt_id(text) for text in variants],
                "seq": np.arange(next_seq + start, next_seq + start + count, dtype=np.int64),
                "text": variants,
                "clip_embedding": _vector_column(_around(clip[centres], rng)),
                "minilm_embedding": _vector_column(_around(minilm[centres], rng)),
                "source": ["variant"] * count,
                "added_at": pa.array([now] * count, pa.timestamp("us", tz="UTC")),
            },
            schema=table.schema,
        )
        table.add(rows)


def _around(centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at cosine ~VARIANT_COSINE from each unit row of `centres`."""
    d = centres.shape[1]
    spread = np.sqrt(1 / VARIANT_COSINE**2 - 1)  # |noise| for that cosine, noise orthogonal on average
    noisy = centres + rng.standard_normal(centres.shape).astype(np.float32) * (spread / np.sqrt(d))
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def _vector_column(vectors: np.ndarray):
    import pyarrow as pa

    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1)), vectors.shape[1])


def timed(calls: list, runs: int = 1) -> tuple[list, list[float]]:
    """Run each zero-argument call once untimed (warm-up), then timed; returns (results, milliseconds)."""
    results, times = [], []
    for call in calls:
        call()
        start = time.perf_counter()
        results.append(call())
        times.append((time.perf_counter() - start) * 1000)
    return results, times


def exact_ids(table, column: str, query: np.ndarray, k: int) -> set[str]:
    """The k nearest rows' ids by an exact LanceDB scan (the index bypassed)."""
    search = table.search(np.asarray(query, np.float32), vector_column_name=column).distance_type("cosine")
    return set(search.bypass_vector_index().select(["id", "_distance"]).limit(k).to_arrow().column("id").to_pylist())


def main(argv: list[str] | None = None) -> str:
    import clipstore
    from clipstore.db import tables, vector_index
    from clipstore.describe.model_b import bank_neighbours
    from clipstore.imaging import load_image
    from clipstore.prompts.nearest import CLIP_COLUMN, MINILM_COLUMN
    from clipstore.world import render_folder
    from clipstore.world.corpus import prompt_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="prompts in the bank")
    parser.add_argument("--real", type=int, default=20_000, help="corpus prompts embedded for real")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--index-threshold", type=int, default=None, help="the store's index threshold (default: the store default)")
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/clipstore-bench").expanduser())
    args = parser.parse_args(argv)

    folder = args.cache / f"describe-scale-{args.n}"
    started = time.perf_counter()
    state = build_store(folder, args.n, min(args.real, args.n), args.index_threshold, folder / "images")
    build_seconds = time.perf_counter() - started
    store = clipstore.connect(folder / "store.clipstore", create=False)
    table = tables.open_prompts(store.db)
    index = vector_index.index_state(table, CLIP_COLUMN)

    render_folder(folder / "queries", args.queries, seed=29, split="heldout")
    paths = sorted(str(p) for p in (folder / "queries").rglob("*.png"))[: args.queries]
    describer = store.describer()
    k = describer.knn.k
    described, describe_ms = timed([lambda p=p: store.describe(p) for p in paths])
    embeddings = [store.encoder.encode_images([load_image(p).image])[0] for p in paths]
    neighbours, neighbour_ms = timed([lambda e=e: bank_neighbours(store.db, e, k) for e in embeddings])
    recall_b = np.mean([len(set(found.ids) & exact_ids(table, CLIP_COLUMN, e, k)) / k for found, e in zip(neighbours, embeddings)])
    texts = prompt_corpus(args.queries, seed=31)
    hits, search_ms = timed([lambda t=t: store.search_prompts(t, k=10) for t in texts])
    queries = store.minilm.encode(texts)
    recall_s = np.mean([len({h.id for h in found} & exact_ids(table, MINILM_COLUMN, q, 10)) / 10 for found, q in zip(hits, queries)])
    _, exact_ms = timed([lambda e=e: exact_ids(table, CLIP_COLUMN, e, k) for e in embeddings])

    def row(name: str, times: list[float], recall: str) -> str:
        return f"| {name} | {len(times)} | {np.percentile(times, 50):.1f} | {np.percentile(times, 95):.1f} | {recall} |"

    lines = [
        f"Prompt bank of {table.count_rows():,} prompts ({min(args.real, args.n):,} corpus prompts embedded for real, the "
        f"rest clustered variants); vector index: "
        + (f"{index['type']} on clip_embedding and minilm_embedding ({index['rows_indexed']:,} rows)" if index else "none")
        + f"; store {state} in {build_seconds:.0f} s; {cpu_name()}",
        "",
        "| measure (warm) | runs | p50 ms | p95 ms | recall vs exact |",
        "| --- | ---: | ---: | ---: | ---: |",
        row(f"describe (Model B k={k} + head {describer.head_id[:8] if describer.head_id else 'none'})", describe_ms, "—"),
        row(f"Model B neighbours (k={k})", neighbour_ms, f"{recall_b:.3f} (recall@{k})"),
        row("prompts search (k=10)", search_ms, f"{recall_s:.3f} (recall@10)"),
        row(f"exact LanceDB scan of clip_embedding (k={k}, reference)", exact_ms, "1.000"),
    ]
    assert all(d.prompts for d in described)
    table_text = "\n".join(lines)
    print(table_text)
    return table_text


if __name__ == "__main__":
    main()
