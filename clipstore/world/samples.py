"""Render-world samples and folders of them (PNG files with their prompt embedded, plus a manifest)."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from PIL import Image, PngImagePlugin

from clipstore.errors import NotWritableError
from clipstore.world.grammar import Scene, describe, sample_scene
from clipstore.world.render import render_scene

MANIFEST_NAME = "manifest.jsonl"
DEFAULT_SIZE = 128
RENDER_STAGE = "render images"
"""The progress stage of `render_folder`: done/total count the images written."""


@dataclass(frozen=True)
class WorldSample:
    """One render-world pair: the image, the prompt that describes it, and the structured labels."""

    index: int
    image: Image.Image
    prompt: str
    labels: dict[str, Any]


@dataclass(frozen=True)
class WorldManifest:
    """A rendered folder: where it is, its manifest file, how many images, and the seed/split/size used."""

    folder: str
    manifest: str
    count: int
    seed: int
    split: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sample_rng(seed: int, split: str, index: int) -> random.Random:
    """The random stream of one sample: independent of every other sample, so any index renders alone."""
    return random.Random(f"clipstore-world:{seed}:{split}:{index}")


def generate(n: int, seed: int = 0, split: str = "train", size: int = DEFAULT_SIZE, start: int = 0) -> Iterator[WorldSample]:
    """Samples `start` .. `start + n - 1` of the (seed, split) stream, each rendered at size x size pixels."""
    for index in range(start, start + n):
        rng = sample_rng(seed, split, index)
        scene = sample_scene(rng, split)
        prompt = describe(scene, rng)
        image = render_scene(scene, size, rng)
        yield WorldSample(index, image, prompt, {**scene.labels(), "split": split})


def sd_parameters(prompt: str, seed: int, index: int, size: int) -> str:
    """The `parameters` text a Stable Diffusion front end (AUTOMATIC1111) writes into its PNGs."""
    return (
        f"{prompt}\nNegative prompt: blurry, low quality\n"
        f"Steps: 1, Sampler: clipstore-world, CFG scale: 1, Seed: {seed * 1_000_003 + index}, "
        f"Size: {size}x{size}, Model: clipstore-world"
    )


def render_folder(
    out: str | os.PathLike[str],
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    size: int = DEFAULT_SIZE,
    progress: Callable[[str, int, int], None] | None = None,
) -> WorldManifest:
    """Write n samples as PNGs under `out/<shape>/` plus `out/manifest.jsonl` (path, prompt, labels).

    Each PNG carries its prompt in a `parameters` text chunk, the way Stable Diffusion front ends do.
    The same (n, seed, split, size) always writes byte-identical files. `progress(RENDER_STAGE, done, n)` is
    called after each image.
    """
    folder = Path(out).expanduser()
    try:
        return _render(folder, n, seed, split, size, progress)
    except BrokenPipeError:  # the reader of a progress display went away: not the output folder's fault
        raise
    except OSError as exc:
        raise NotWritableError.from_os_error(
            f"the rendered images to {folder}", exc, "Choose an output folder you can write to."
        ) from exc


def _render(folder: Path, n: int, seed: int, split: str, size: int, progress) -> WorldManifest:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / MANIFEST_NAME
    with open(manifest, "w", encoding="utf-8") as lines:
        for done, sample in enumerate(generate(n, seed, split, size), start=1):
            relative = Path(sample.labels["shape"]) / f"{split}-{seed}-{sample.index:06d}.png"
            (folder / relative.parent).mkdir(exist_ok=True)
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", sd_parameters(sample.prompt, seed, sample.index, size))
            sample.image.save(folder / relative, format="PNG", pnginfo=info)
            record = {"path": relative.as_posix(), "prompt": sample.prompt, "labels": sample.labels}
            lines.write(json.dumps(record, ensure_ascii=False) + "\n")
            if progress:
                progress(RENDER_STAGE, done, n)
    return WorldManifest(str(folder.resolve()), str(manifest.resolve()), n, seed, split, size)


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a manifest.jsonl, with `path` made absolute."""
    manifest = Path(path).expanduser()
    records = []
    with open(manifest, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                record["path"] = str((manifest.parent / record["path"]).resolve())
                records.append(record)
    return records
