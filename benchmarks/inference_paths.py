"""Inference paths for the image tower on this CPU: speed and agreement with fp32, side by side (issue #13).

    python benchmarks/inference_paths.py [--arch ViT-B-32] [--batch 32] [--rounds 3]

The forward pass alone (a batch of preprocessed pixels in memory, the model's image tower, seeded random
weights: speed does not depend on the values) through each path this machine can run: torch eager fp32 (what
ingest uses on CPUs without native bf16), channels-last input, `torch.compile` (inductor), ONNX Runtime fp32
(the tower exported with `torch.onnx.export`; needs `pip install onnxruntime onnx onnxscript`, skipped without),
dynamic int8 linear layers (clipstore's opt-in `precision="int8"`), and bf16 where the CPU has native bf16.
Each row gives images/s (best of the rounds), the ratio to eager fp32, and the lowest cosine between its
embeddings and eager fp32's over the batch (issue #13: >= 0.999 for a default, >= 0.99 for an opt-in).
Compile/export time is reported apart from the rate.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_throughput import cpu_name  # noqa: E402


def _rate(run: Callable[[], object], images: int, seconds: float = 6.0) -> float:
    """Images/s of `run` (one batch per call), over at least `seconds` after one warm-up call."""
    run()
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 2:
            return calls * images / elapsed


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="minimum measuring time per row and round")
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile (its compile takes a minute)")
    args = parser.parse_args(argv)

    import open_clip
    import torch

    from clipstore.encoders.clip import _quantize_linear_layers, cpu_supports_bf16
    from clipstore.encoders.identity import register_builtin_architectures

    register_builtin_architectures()  # --arch clipstore-mini
    torch.manual_seed(0)
    model = open_clip.create_model(args.arch, pretrained=None).eval()
    tower = model.visual
    size = tower.image_size if isinstance(tower.image_size, int) else tower.image_size[0]
    pixels = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = _normalised(tower(pixels).numpy())

    rows: list[tuple[str, Callable[[], np.ndarray], float]] = []  # (name, run -> embeddings, setup seconds)

    def eager(module, x):
        def run():
            with torch.inference_mode():
                return module(x).float().numpy()
        return run

    rows.append(("torch eager, fp32", eager(tower, pixels), 0.0))
    rows.append(("torch eager, fp32, channels-last input", eager(tower, pixels.contiguous(memory_format=torch.channels_last)), 0.0))

    if not args.no_compile:
        started = time.perf_counter()
        try:
            compiled = torch.compile(tower)
            with torch.inference_mode():
                compiled(pixels)
            rows.append(("torch.compile (inductor), fp32", eager(compiled, pixels), time.perf_counter() - started))
        except Exception as error:  # noqa: BLE001 - a path this machine cannot run is reported, not fatal
            print(f"torch.compile: not run ({type(error).__name__}: {str(error).splitlines()[0][:160]})", file=sys.stderr)

    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
        print("ONNX Runtime: not installed (pip install onnxruntime onnx onnxscript)", file=sys.stderr)
    if ort is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "tower.onnx")
            started = time.perf_counter()
            torch.onnx.export(tower, (pixels,), path, input_names=["pixels"], output_names=["features"], dynamo=True)
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = torch.get_num_threads()
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: pixels.numpy()}
            session.run(None, feed)
            rows.append(("ONNX Runtime, fp32", lambda: session.run(None, feed)[0], time.perf_counter() - started))

    quantised = _quantize_linear_layers(tower)
    rows.append(("dynamic int8 linear layers (opt-in int8)", eager(quantised, pixels), 0.0))
    if cpu_supports_bf16():
        bf16 = copy.deepcopy(tower).to(torch.bfloat16)
        rows.append(("torch eager, bf16 (native)", eager(bf16, pixels.to(torch.bfloat16)), 0.0))

    best = [0.0] * len(rows)
    agreement = [float(np.min(np.sum(_normalised(run()) * reference, axis=1))) for _, run, _ in rows]
    for _ in range(max(1, args.rounds)):
        for index, (_, run, _) in enumerate(rows):
            best[index] = max(best[index], _rate(run, args.batch, args.seconds))
    lines = [
        f"{args.arch} image tower, batch {args.batch}, CPU: {cpu_name()}, torch threads {torch.get_num_threads()}; "
        f"best of {max(1, args.rounds)} round(s)",
        "",
        "| path | images/s | × eager fp32 | min cosine to eager fp32 | setup (compile/export) s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for (name, _, setup), rate, cosine in zip(rows, best, agreement):
        lines.append(f"| {name} | {rate:.1f} | {rate / best[0]:.2f} | {cosine:.5f} | {setup:.0f} |")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
