"""Simple drawings of coloured shapes made WITHOUT `clipstore.world`: an evaluation-only world for describe.

Issue #16 found describe doing worse than the zero-shot nearest prompt on drawings another program made. These
are such drawings: filled or outlined circles, squares, triangles, stars, diamonds, crosses, hexagons and
rings in several colours on white, of varied size and position, drawn with PIL alone. Nothing here is used to
train or tune clipstore; tests use it to check that describe's defaults hold on images and banks they were not
tuned on.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 210, 20),
    "purple": (130, 40, 170),
    "orange": (245, 130, 20),
    "black": (20, 20, 20),
    "pink": (240, 120, 180),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross", "hexagon", "ring")


@dataclass(frozen=True)
class Drawing:
    """One drawing: its file, colour, shape and the plain prompt that names them."""

    path: Path
    colour: str
    shape: str

    @property
    def prompt(self) -> str:
        return plain_prompt(self.colour, self.shape)


def plain_prompt(colour: str, shape: str) -> str:
    """The prompt a new user would write: "a <colour> <shape> on a white background"."""
    return f"a {colour} {shape} on a white background"


def _polygon(cx: float, cy: float, r: float, sides: int, turn: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(turn + 2 * math.pi * i / sides), cy + r * math.sin(turn + 2 * math.pi * i / sides)) for i in range(sides)]


def draw_shape(shape: str, colour: str, *, size: int = 128, rng: random.Random | None = None) -> Image.Image:
    """One shape in one colour on white; size, position, rotation and fill-or-outline vary with `rng`."""
    rng = rng or random.Random(0)
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    rgb = COLOURS[colour]
    r = size * rng.uniform(0.18, 0.36)
    cx, cy = rng.uniform(r + 2, size - r - 2), rng.uniform(r + 2, size - r - 2)
    outline = rng.random() < 0.3 and shape not in ("cross", "ring")
    width = max(2, int(r / 5))
    fill = None if outline else rgb
    turn = rng.uniform(-0.2, 0.2)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=rgb, width=width)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=rgb, width=max(3, int(r / 3)))
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, r * 1.2, 4, math.pi / 4 + turn), fill=fill, outline=rgb, width=width)
    elif shape == "diamond":
        draw.polygon(_polygon(cx, cy, r * 1.1, 4, turn), fill=fill, outline=rgb, width=width)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, r * 1.1, 3, -math.pi / 2 + turn), fill=fill, outline=rgb, width=width)
    elif shape == "hexagon":
        draw.polygon(_polygon(cx, cy, r, 6, turn), fill=fill, outline=rgb, width=width)
    elif shape == "star":
        points = []
        for i in range(10):
            radius = r * 1.15 if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + turn + math.pi * i / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=fill, outline=rgb, width=width)
    elif shape == "cross":
        arm = r / 3
        draw.rectangle((cx - r, cy - arm, cx + r, cy + arm), fill=rgb)
        draw.rectangle((cx - arm, cy - r, cx + arm, cy + r), fill=rgb)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return image


def render_drawings(
    folder: Path, n: int, *, seed: int = 0, colours=tuple(COLOURS), shapes=SHAPES, size: int = 128,
    sidecar: bool = True,
) -> list[Drawing]:
    """Write n drawings (PNG) into folder, cycling through every colour x shape pair in a seeded order; with
    `sidecar`, each carries its plain prompt in a `name.txt` caption file (so ingest records it)."""
    rng = random.Random(seed)
    pairs = [(c, s) for c in colours for s in shapes]
    rng.shuffle(pairs)
    folder.mkdir(parents=True, exist_ok=True)
    drawings = []
    for i in range(n):
        colour, shape = pairs[i % len(pairs)]
        path = folder / f"drawing_{seed}_{i:04d}.png"
        draw_shape(shape, colour, size=size, rng=rng).save(path)
        if sidecar:
            path.with_suffix(".txt").write_text(plain_prompt(colour, shape))
        drawings.append(Drawing(path, colour, shape))
    return drawings
