"""Fine-tuning learning rates on drawings from outside the render world: fixed scales vs the probe.

Issue #16's case: a few hundred simple drawings of coloured shapes made by another program
(`tests/outside_world.py`, evaluation-only code; each with its prompt "a <colour> <shape> on a white
background" in a sidecar caption file), in one folder per shape, fine-tuned with
`--labels-from-folders` (MCIP + ArcMargin on the shape labels) on clipstore-mini. The same store is
fine-tuned at 1x, 10x and 100x the default learning rates (`lr_probe=False`), and with the defaults as a user
gets them (the probe on); each row gives the validation image->image mAP@10 before and after, the scale used,
and the held-out test split's mAP@10 / R@1 (`evaluate_retrieval`, labels from folders).

    python benchmarks/finetune_lr.py [--n 360] [--epochs 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import clipstore
from clipstore.finetune.options import FinetuneOptions


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def drawings_by_shape(folder: Path, n: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from outside_world import render_drawings

    for drawing in render_drawings(folder / "all", n, seed=16):  # each with its plain prompt in a sidecar .txt
        (folder / drawing.shape).mkdir(exist_ok=True)
        for path in (drawing.path, drawing.path.with_suffix(".txt")):
            shutil.move(str(path), folder / drawing.shape / path.name)
    (folder / "all").rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=360)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--model", default="clipstore-mini")
    args = parser.parse_args()

    defaults = FinetuneOptions()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "drawings"
        drawings_by_shape(folder, args.n)
        store = clipstore.connect(Path(tmp) / "store", model=args.model)
        store.ingest(folder)
        print(f"{store.model.spec}; {args.n} drawings in {len(os.listdir(folder))} shape folders; {args.epochs} epochs; "
              f"defaults lr_backbone {defaults.lr_backbone:g}, lr_head {defaults.lr_head:g}; {cpu_name()}\n")
        runs = [("1x (no probe)", dict(lr_probe=False)),
                ("10x (no probe)", dict(lr_probe=False, lr_backbone=defaults.lr_backbone * 10, lr_head=defaults.lr_head * 10)),
                ("100x (no probe)", dict(lr_probe=False, lr_backbone=defaults.lr_backbone * 100, lr_head=defaults.lr_head * 100)),
                ("defaults (probe)", {})]
        rows = []
        for name, options in runs:
            started = time.perf_counter()
            report = store.finetune(epochs=args.epochs, labels_from_folders=True, **options)
            seconds = time.perf_counter() - started
            rows.append((name, report, seconds))
        evaluation = store.evaluate_retrieval(models=[r.model_id for _, r, _ in rows], labels_from_folders=True)
        base, *tuned = evaluation.rows
        print("| run | scale used | validation mAP@10 before → after | improved | test mAP@10 | test R@1 | seconds |")
        print("| --- | ---: | --- | --- | ---: | ---: | ---: |")
        print(f"| base model | – | – | – | {base.image_map:.4f} | {base.image_r1:.4f} | – |")
        for (name, report, seconds), row in zip(rows, tuned):
            scale = report.lr_scale if report.lr_probe else float(name.split("x")[0])
            print(f"| {name} | {scale:g}x | {report.validation_before:.4f} → {report.validation_after:.4f} | "
                  f"{report.improved} | {row.image_map:.4f} | {row.image_r1:.4f} | {seconds:.0f} |")
        probe = next(report for name, report, _ in rows if report.lr_probe)
        print("\nprobe: " + ", ".join(f"{scale:g}x → {score:.4f}" for scale, score in probe.lr_probe))


if __name__ == "__main__":
    main()
