"""Seed 001's Table 1 on the render world: zero-shot CLIP, the data-filter ablation, Model A, Model B, Ensemble.

Setup (all offline, clipstore-mini, seeds the model never saw in its own training):
- a store of N rendered images (train split, seed 2000) whose PNGs carry their prompts; ingest puts each
  image's prompt on its row and offers it to the prompt bank (0.85 dedup);
- an offline prompt corpus (seed 002's offline stage): `--corpus` further render-world prompts without images;
- `clipstore train` twice: head only (--freeze-vision) and vision tower + head (differential learning rates);
  each tunes Model B's K / Distance_Dim and the ensemble alpha on the validation split;
- `clipstore eval` on the store's held-out test split and on rendered held-out *combinations* (shape/colour
  pairs never drawn in training), each with its answers hidden from the bank.
Prints the tables and the K / Distance_Dim and alpha sweeps behind the defaults.

    python benchmarks/describe_eval.py [--n 3000] [--corpus 20000] [--heldout 500] [--tower-epochs 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import clipstore
from clipstore.world import render_folder
from clipstore.world.grammar import describe, sample_scene
from clipstore.world.samples import sample_rng

SEED = 2000


def corpus(n: int) -> list[str]:
    """Render-world prompts without images (seed 2001): the offline prompt corpus."""
    return [describe(sample_scene(rng, "train"), rng) for rng in (sample_rng(SEED + 1, "train", i) for i in range(n))]


def table(report) -> None:
    print("| model | Avg-Cos | n |")
    print("| --- | ---: | ---: |")
    for row in report.rows:
        print(f"| {row.name} | {row.avg_cos:.4f} | {row.n} |")
    for note in report.notes:
        print(f"\nnote: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--corpus", type=int, default=20000)
    parser.add_argument("--heldout", type=int, default=500)
    parser.add_argument("--head-epochs", type=int, default=40)
    parser.add_argument("--tower-epochs", type=int, default=8)
    parser.add_argument("--model", default="clipstore-mini", help="The store's model (default: the bundled clipstore-mini).")
    parser.add_argument("--out", default=None, help="Working folder (default: a temporary one).")
    args = parser.parse_args()

    out = args.out or tempfile.mkdtemp(prefix="clipstore-describe-")
    started = time.perf_counter()
    render_folder(os.path.join(out, "world"), args.n, seed=SEED)
    render_folder(os.path.join(out, "heldout"), args.heldout, seed=SEED, split="heldout")
    store = clipstore.connect(os.path.join(out, "store"), model=args.model)
    ingest = store.ingest(os.path.join(out, "world"))
    bank = store.add_prompts(corpus(args.corpus), source="render-world corpus") if args.corpus else None
    print(f"{store.model.spec}, {args.n} images ({ingest.prompts_inserted} of their prompts kept in the bank), "
          f"corpus {args.corpus} prompts ({bank.inserted if bank else 0} kept), bank {store.count_prompts()}; "
          f"setup {time.perf_counter() - started:.0f} s\n")

    runs = {}
    t = time.perf_counter()
    runs["head only"] = store.train(freeze_vision=True, epochs=args.head_epochs, patience=6)
    head_seconds = time.perf_counter() - t
    t = time.perf_counter()
    runs["tower + head"] = store.train(epochs=args.tower_epochs, lr_vision=1e-4, lr_fc=1e-3, patience=3)
    tower_seconds = time.perf_counter() - t
    for (name, report), seconds in zip(runs.items(), (head_seconds, tower_seconds)):
        print(f"train ({name}): {report.train_pairs} pairs after the 0.85 filter ({report.filtered_out} removed), "
              f"{report.validation_pairs} validation, {report.epochs_run} epochs (best {report.best_epoch}), {seconds:.0f} s; "
              f"validation {json.dumps(report.validation)}; alpha {report.ensemble_alpha}, K {report.knn['k']}, "
              f"Distance_Dim {report.knn['distance_dim']}")

    best = max(runs.values(), key=lambda r: r.validation.get("ensemble", r.validation["model_a"]))
    print(f"\nEvaluated head: {best.head_id} ({'tower + head' if best.vision_tuned else 'head only'})")
    for name, kwargs in (("store test split", {}), ("held-out combinations", {"pairs": os.path.join(out, "heldout", "manifest.jsonl")})):
        print(f"\n### {name}\n")
        table(store.evaluate(head=best.head_id, **kwargs))
    for name, report in runs.items():
        if name == ("tower + head" if best.vision_tuned else "head only"):
            continue
        print(f"\n### store test split, the other head ({name})\n")
        table(store.evaluate(head=report.head_id, ablation=()))

    config = json.load(open(os.path.join(best.folder, "config.json"), encoding="utf-8"))
    sweeps = config["validation"].get("sweeps", {})
    if sweeps:
        print("\n### Model B sweep on validation (Avg-Cos; rows K, columns Distance_Dim)\n")
        dims = sorted({row["distance_dim"] for row in sweeps["knn"]})
        print("| K | " + " | ".join(f"{d:g}" for d in dims) + " |")
        print("| ---: | " + " | ".join("---:" for _ in dims) + " |")
        for k in sorted({row["k"] for row in sweeps["knn"]}):
            cells = {row["distance_dim"]: row["avg_cos"] for row in sweeps["knn"] if row["k"] == k}
            print(f"| {k} | " + " | ".join(f"{cells[d]:.4f}" for d in dims) + " |")
        print("\n### ensemble alpha sweep on validation\n")
        print("| alpha | " + " | ".join(f"{row['alpha']:g}" for row in sweeps["alpha"][::2]) + " |")
        print("| --- | " + " | ".join("---:" for _ in sweeps["alpha"][::2]) + " |")
        print("| Avg-Cos | " + " | ".join(f"{row['avg_cos']:.4f}" for row in sweeps["alpha"][::2]) + " |")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
