"""Ingest a folder and search it from Python.

    python examples/ingest_and_search.py FOLDER [--store PATH] [--model SPEC] [--query TEXT]

Without FOLDER's images at hand, make some first: python examples/sample_images.py sample-images
The default model is clipstore-mini (bundled, offline); for real photos pass a real CLIP, e.g.
--model ViT-B-32:laion2b_s34b_b79k (downloaded by open_clip on first use).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import clipstore


def main() -> None:
    parser = argparse.ArgumentParser(description="Ingest a folder and search it.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--store", type=Path, default=Path("example.clipstore"))
    parser.add_argument("--model", default="clipstore-mini")
    parser.add_argument("--query", default="a red circle")
    args = parser.parse_args()

    store = clipstore.connect(args.store, model=args.model)
    report = store.ingest(args.folder)
    print(f"added {report.added}, duplicates {report.duplicates}, unchanged {report.skipped_unchanged}, "
          f"failed {len(report.failed)}")
    for failure in report.failed:
        print(f"  could not ingest {failure.path}: {failure.reason}")

    print(f"\ntext -> image: {args.query!r}")
    for hit in store.search_text(args.query, k=5):
        print(f"  {hit.score:.3f}  {hit.path}")

    first = store.search_text(args.query, k=1)
    if first:
        print(f"\nimage -> image: like {first[0].path}")
        for hit in store.search_image(first[0].path, k=5):
            print(f"  {hit.score:.3f}  {hit.path}")


if __name__ == "__main__":
    main()
