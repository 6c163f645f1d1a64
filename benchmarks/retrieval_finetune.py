"""Seed 003 on the render world: does MCIP / 2SFT fine-tuning improve image->image while keeping text->image?

Setup (offline, clipstore-mini, render-world seed 3000, never seen by the model's own training): a store of N
rendered images; class labels = one structured attribute of the scene (`--label`, default the object colour);
`clipstore finetune` with MCIP (default) and with 2SFT; `clipstore eval --retrieval` on the held-out split
for the base model and each fine-tuned one side by side: image->image mAP@10 and R@1 (same label = relevant),
text->image R@1 / R@10 (each image's own prompt), zero-shot accuracy (labels rendered as "a {label} object"),
k-NN accuracy. The same encoders are also scored with the other attributes as labels, to show what the
fine-tune did to the similarities it was not trained on.

    python benchmarks/retrieval_finetune.py [--n 2000] [--epochs 6] [--label colour] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import clipstore
from clipstore.world import render_folder

SEED = 3000
OTHER_LABELS = ("shape", "background", "pattern")


def table(title: str, report) -> None:
    print(f"\n### {title} ({report.images} held-out images, {report.classes} classes)\n")
    print("| model | i2i mAP@10 | i2i R@1 | t2i R@1 | t2i R@10 | zero-shot | k-NN |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in report.rows:
        print(f"| {row.model} | {row.image_map:.4f} | {row.image_r1:.4f} | {row.text_r1:.4f} | {row.text_r10:.4f} "
              f"| {row.zero_shot_accuracy:.4f} | {row.knn_accuracy:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--label", default="colour")
    parser.add_argument("--lr-backbone", type=float, default=1e-4)
    parser.add_argument("--lr-head", type=float, default=1e-3)
    parser.add_argument("--model", default="clipstore-mini", help="The store's model (default: the bundled clipstore-mini).")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    out = args.out or tempfile.mkdtemp(prefix="clipstore-retrieval-")
    started = time.perf_counter()
    world = render_folder(os.path.join(out, "world"), args.n, seed=SEED)
    store = clipstore.connect(os.path.join(out, "store"), model=args.model)
    store.ingest(world.folder)
    labels = {"label_manifest": world.manifest, "label_field": f"labels.{args.label}"}
    print(f"{store.model.spec}, {args.n} images, labels = {args.label}; setup {time.perf_counter() - started:.0f} s")

    models = []
    for method in ("mcip", "2sft"):
        t = time.perf_counter()
        report = store.finetune(method=method, epochs=args.epochs, realign_epochs=max(1, args.epochs // 2),
                                lr_backbone=args.lr_backbone, lr_head=args.lr_head, lr_probe=False, **labels)
        print(f"{method}: {report.train_images} train / {report.validation_images} validation images, "
              f"{report.captions_per_image:.1f} pseudo-captions each; {report.validation_metric} "
              f"{report.validation_before:.4f} -> {report.validation_after:.4f}; {time.perf_counter() - t:.0f} s")
        models.append(report.model_id)

    table(f"labels = {args.label} (the fine-tuning labels)", store.evaluate_retrieval(models=models, template="a {label} object", **labels))
    for other in OTHER_LABELS:
        if other != args.label:
            table(f"labels = {other} (not trained on)", store.evaluate_retrieval(
                models=models, template="a {label} object", label_manifest=world.manifest, label_field=f"labels.{other}"))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
