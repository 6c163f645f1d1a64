"""Exact search latency: clipstore's in-memory matrix search against LanceDB's flat (no index) search.

Both are exact top-k cosine over the same random unit vectors; clipstore's first query also pays for loading
the vectors, reported separately.

    python benchmarks/search_latency.py [--n 100000] [--dim 512] [--queries 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from clipstore.db import layout


def main() -> None:
    import lancedb

    from clipstore.db import tables
    from clipstore.encoders.identity import resolve_model
    from clipstore.search.searcher import ImageSearcher

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{i:064x}" for i in range(args.n)]
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)

    model = resolve_model("ViT-B-32:random" if args.dim == 512 else "clipstore-mini")
    assert model.embed_dim == args.dim, "use --dim 512 (ViT-B-32) or 256 (clipstore-mini)"
    with tempfile.TemporaryDirectory() as tmp:
        db = lancedb.connect(Path(tmp))
        images = db.create_table(layout.IMAGES, schema=layout.images_schema(model))
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), args.dim)
        nulls = lambda kind: pa.nulls(args.n, kind)  # noqa: E731 - only id and embedding matter here
        columns = [pa.array(ids), nulls(pa.int32()), nulls(pa.int32()), nulls(pa.string()), embedding,
                   nulls(pa.timestamp("us", tz="UTC"))]
        images.add(pa.Table.from_arrays(columns, schema=images.schema))
        files = db.create_table(layout.FILES, schema=layout.files_schema())
        files.add(pa.Table.from_pylist([{"path": f"/p/{i}.jpg", "size": 1, "mtime_ns": 1, "image_id": i} for i in ids], schema=files.schema))

        searcher = ImageSearcher(db)
        start = time.perf_counter()
        first = searcher.search(queries[0], 10)
        load_and_first = time.perf_counter() - start
        start = time.perf_counter()
        ours = [searcher.search(q, 10) for q in queries]
        clipstore_ms = (time.perf_counter() - start) / len(queries) * 1000

        start = time.perf_counter()
        flat = [images.search(q).distance_type("cosine").limit(10).select(["id"]).to_list() for q in queries]
        lancedb_ms = (time.perf_counter() - start) / len(queries) * 1000
        agree = np.mean([[h.id for h in a] == [r["id"] for r in b] for a, b in zip(ours, flat)])
        assert first

    print(f"{args.n} x {args.dim} vectors, exact top-10 cosine, {args.queries} queries\n")
    print("| method | ms / query | × LanceDB flat |")
    print("| --- | ---: | ---: |")
    print(f"| LanceDB flat search | {lancedb_ms:.1f} | 1.00 |")
    print(f"| clipstore in-memory matrix | {clipstore_ms:.1f} | {lancedb_ms / clipstore_ms:.1f} |")
    print(f"\nclipstore first query incl. loading the vectors: {load_and_first * 1000:.0f} ms; "
          f"same top-10 as LanceDB on {agree:.0%} of queries")


if __name__ == "__main__":
    main()
