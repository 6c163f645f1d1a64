"""Write a small folder of sample images (coloured shapes on plain backgrounds), so clipstore can be tried
offline without a photo collection.

    python examples/sample_images.py sample-images --n 48

File names say what each picture shows (e.g. `red-circle-on-white-07.png`); a few files are exact copies
and one is not an image at all, to show how ingest reports duplicates and failures.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
BACKGROUNDS = {"white": (250, 250, 250), "black": (15, 15, 15), "grey": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle")


def draw(shape: str, colour: tuple[int, int, int], background: tuple[int, int, int], rng: random.Random) -> Image.Image:
    """One 256x192 picture of `shape` in `colour` on `background`, at a random size and place."""
    image = Image.new("RGB", (256, 192), background)
    pen = ImageDraw.Draw(image)
    size = rng.randint(60, 140)
    x, y = rng.randint(0, 256 - size), rng.randint(0, 192 - size)
    if shape == "circle":
        pen.ellipse((x, y, x + size, y + size), fill=colour)
    elif shape == "square":
        pen.rectangle((x, y, x + size, y + size), fill=colour)
    else:
        pen.polygon([(x + size // 2, y), (x, y + size), (x + size, y + size)], fill=colour)
    return image


def write_sample_folder(out: Path, n: int = 48, seed: int = 0) -> list[Path]:
    """Write `n` sample pictures (plus two copies and one non-image) under `out`; returns the picture paths."""
    rng = random.Random(seed)
    written = []
    for index in range(n):
        shape = SHAPES[index % len(SHAPES)]
        colour_name = rng.choice(sorted(COLOURS))
        background_name = rng.choice(sorted(BACKGROUNDS))
        path = out / shape / f"{colour_name}-{shape}-on-{background_name}-{index:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        draw(shape, COLOURS[colour_name], BACKGROUNDS[background_name], rng).save(path)
        written.append(path)
    copies = out / "copies"
    copies.mkdir(parents=True, exist_ok=True)
    for original in written[:2]:
        (copies / f"copy-of-{original.name}").write_bytes(original.read_bytes())
    (out / "not-a-photo.jpg").write_text("this file only pretends to be a JPEG\n", encoding="utf-8")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (created)")
    parser.add_argument("--n", type=int, default=48, help="number of pictures")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    written = write_sample_folder(args.out, args.n, args.seed)
    print(f"wrote {len(written)} sample images under {args.out}")


if __name__ == "__main__":
    main()
