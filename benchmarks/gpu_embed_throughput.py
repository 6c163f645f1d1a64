"""Per-worker capacity of a GPU ingest worker: the image tower on the GPU, JPEG decode on the CPU cores beside it.

Measures, on the machine it runs on (needs CUDA for the GPU rows):
- the image tower's forward pass on the GPU (default ViT-B-32 at 224 px; random weights: the speed of a
  forward pass does not depend on the weights' values) at several batch sizes and precisions, with the
  batch already on the GPU (the tower's ceiling), and with uint8 batches copied from pinned host memory and
  normalised on the GPU (what a worker does);
- clipstore's own decode + preprocess (`clipstore.imaging.decode_image` with the reduced-DCT-scale decode, then
  the model's resize/crop) of 640x480 camera-like JPEGs, on one core and on every core in parallel.

The GPU worker's rate is the smaller of the two; BENCHMARKS.md's capacity plan uses these figures.

    python benchmarks/gpu_embed_throughput.py [--model ViT-B-32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import time

import numpy as np


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def camera_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """n 640x480 JPEGs with photo-like content (smooth fields, edges, noise), quality 90."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((640, 480), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, np.int16) + rng.normal(0, 8, (480, 640, 3)).astype(np.int16)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def _decode_worker(args: tuple[list[bytes], int, float]) -> int:
    """Decode + resize/crop images for `seconds`; returns how many were done."""
    import torch

    torch.set_num_threads(1)
    from clipstore.imaging import decode_image
    from torchvision.transforms import functional as TF
    from torchvision.transforms import InterpolationMode

    data, side, seconds = args
    done, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        image = decode_image(data[done % len(data)], min_side=side).image
        image = TF.center_crop(TF.resize(image, side, interpolation=InterpolationMode.BICUBIC), side)
        TF.pil_to_tensor(image)
        done += 1
    return done


def decode_rates(data: list[bytes], side: int, seconds: float) -> tuple[float, float, int]:
    """(images/s on one core, images/s on every core, cores)."""
    cores = os.cpu_count() or 1
    one = _decode_worker((data, side, seconds)) / seconds
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        counts = pool.map(_decode_worker, [(data, side, seconds)] * cores)
    return one, sum(counts) / seconds, cores


def gpu_rows(model_name: str, seconds: float) -> list[tuple[str, int, str, float]]:
    import open_clip
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = open_clip.create_model(model_name, pretrained=None).visual.cuda().eval()
    side = model.image_size[0] if isinstance(model.image_size, (tuple, list)) else model.image_size
    mean = torch.tensor([0.481, 0.458, 0.408], device="cuda").view(1, 3, 1, 1)
    std = torch.tensor([0.269, 0.261, 0.276], device="cuda").view(1, 3, 1, 1)
    rows = []
    for precision, dtype in (("fp32 (tf32)", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        tower = model.to(dtype)
        for batch in (64, 256, 1024):
            for feed in ("on GPU", "uint8 from host"):
                host = torch.randint(0, 255, (batch, 3, side, side), dtype=torch.uint8).pin_memory()
                ready = ((host.cuda().to(dtype) / 255 - mean.to(dtype)) / std.to(dtype)).contiguous()

                def one() -> None:
                    if feed == "on GPU":
                        x = ready
                    else:
                        x = (host.cuda(non_blocking=True).to(dtype) / 255 - mean.to(dtype)) / std.to(dtype)
                    tower(x)

                with torch.inference_mode():
                    for _ in range(3):
                        one()
                    torch.cuda.synchronize()
                    started, done = time.perf_counter(), 0
                    while time.perf_counter() - started < seconds:
                        one()
                        done += batch
                    torch.cuda.synchronize()
                rows.append((precision, batch, feed, done / (time.perf_counter() - started)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--side", type=int, default=224)
    args = parser.parse_args()

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"{args.model}, {gpu}; {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}\n")
    if torch.cuda.is_available():
        print("| precision | batch | input | images/s |")
        print("| --- | ---: | --- | ---: |")
        for precision, batch, feed, rate in gpu_rows(args.model, args.seconds):
            print(f"| {precision} | {batch} | {feed} | {rate:,.0f} |", flush=True)
        print()
    one, every, cores = decode_rates(camera_jpegs(64), args.side, args.seconds)
    print("| decode + resize/crop of 640x480 JPEGs | images/s |")
    print("| --- | ---: |")
    print(f"| one core | {one:,.0f} |")
    print(f"| {cores} cores | {every:,.0f} |")


if __name__ == "__main__":
    main()
