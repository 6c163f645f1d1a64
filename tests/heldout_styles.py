"""Held-out drawing styles for measuring clipstore-mini outside the render world: evaluation only.

Nothing here is used to train or tune a model, and nothing here shares code with `clipstore.world` (the
training renderer): shapes are rasterised from signed distance functions in numpy (not PIL's polygon filler),
in a palette of its own (other RGB values for the same colour names), in four styles the render world does
not draw the same way:

- "flat": a filled shape on a white page (the drawings a new user tried in issue #16);
- "ink": an outline of random thickness on off-white paper with a little grain;
- "sticker": a filled shape with a soft drop shadow on a pastel card, vignetted, saved as a JPEG;
- "snapshot": a filled shape on a blotchy, noisy, blurred background, like a phone photo of a poster, JPEG.

Each test set is one image per (colour, shape) pair with the prompt a user would type, "a <colour> <shape>",
so recall@1 among the set asks exactly "does it tell colour and shape apart".
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

STYLES = ("flat", "ink", "sticker", "snapshot")
PALETTE = {
    "red": (205, 35, 45),
    "green": (40, 150, 60),
    "blue": (35, 75, 205),
    "yellow": (245, 200, 30),
    "purple": (120, 50, 160),
    "orange": (240, 120, 35),
    "black": (25, 25, 30),
    "pink": (235, 110, 170),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross", "hexagon", "ring", "pentagon")


@dataclass(frozen=True)
class StyledPair:
    image: Image.Image
    prompt: str
    colour: str
    shape: str


def user_prompt(colour: str, shape: str) -> str:
    return f"a {colour} {shape}"


def styled_set(style: str, seed: int = 0, size: int = 128) -> list[StyledPair]:
    """One image per (colour, shape) pair in `style`, each with its prompt "a <colour> <shape>"."""
    rng = random.Random(f"heldout-style:{style}:{seed}")
    return [
        StyledPair(draw(style, shape, colour, size, rng), user_prompt(colour, shape), colour, shape)
        for colour in PALETTE
        for shape in SHAPES
    ]


def draw(style: str, shape: str, colour: str, size: int, rng: random.Random) -> Image.Image:
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}")
    noise = np.random.default_rng(rng.getrandbits(32))
    radius = size * rng.uniform(0.2, 0.34)
    centre = (rng.uniform(radius + 3, size - radius - 3), rng.uniform(radius + 3, size - radius - 3))
    distance = signed_distance(shape, size, centre, radius, rng.uniform(-0.15, 0.15))
    ink = np.asarray(PALETTE[colour], np.float32)
    if style == "flat":
        page = np.full((size, size, 3), 255.0, np.float32)
        return _to_image(_paint(page, _coverage(distance), ink))
    if style == "ink":
        page = np.full((size, size, 3), 246.0, np.float32) + noise.normal(0, 3, (size, size, 1))
        page[..., 2] -= 10  # warm paper
        fill = _coverage(distance)  # the outline is the fill minus the fill eroded by the pen's width
        pen = 2 * max(1, round(radius * rng.uniform(0.06, 0.16))) + 1
        inner = np.asarray(Image.fromarray((fill * 255).astype(np.uint8)).filter(ImageFilter.MinFilter(pen)), np.float32) / 255
        return _to_image(_paint(page, fill - inner, ink))
    if style == "sticker":
        card = np.asarray([rng.uniform(200, 245) for _ in range(3)], np.float32)
        page = np.broadcast_to(card, (size, size, 3)).copy()
        y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
        page *= (1 - 0.5 * (x * x + y * y))[..., None]
        shift = max(2, int(radius * 0.12))
        shadow = np.roll(np.roll(_coverage(distance - radius * 0.05), shift, 0), shift, 1)
        shadow = np.asarray(Image.fromarray((shadow * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(shift)), np.float32) / 255
        page *= 1 - 0.4 * shadow[..., None]
        return _jpeg(_to_image(_paint(page, _coverage(distance), ink)), rng.randint(40, 75))
    # snapshot
    blotches = noise.normal(0, 1, (6, 6)).astype(np.float32)
    field = np.asarray(Image.fromarray(blotches, mode="F").resize((size, size), Image.Resampling.BICUBIC))
    base = np.asarray([rng.uniform(150, 230) for _ in range(3)], np.float32)
    page = base + field[..., None] * 18 + noise.normal(0, 6, (size, size, 3))
    painted = _paint(page, _coverage(distance), ink * rng.uniform(0.85, 1.0))
    painted += noise.normal(0, 5, painted.shape)
    image = _to_image(painted).filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0)))
    return _jpeg(image, rng.randint(30, 60))


def signed_distance(shape: str, size: int, centre: tuple[float, float], radius: float, turn: float) -> np.ndarray:
    """Distance in pixels to the shape's edge at every pixel centre (negative inside)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    px, py = x - centre[0], y - centre[1]
    c, s = math.cos(turn), math.sin(turn)
    px, py = c * px + s * py, -s * px + c * py
    if shape == "circle":
        return np.hypot(px, py) - radius
    if shape == "ring":
        return np.abs(np.hypot(px, py) - radius * 0.8) - radius * 0.2
    if shape == "square":
        return _box(px, py, radius * 0.85, radius * 0.85)
    if shape == "cross":
        arm = radius * 0.3
        return np.minimum(_box(px, py, radius, arm), _box(px, py, arm, radius))
    if shape == "diamond":
        return _convex(px, py, [(0, -radius), (radius * 0.65, 0), (0, radius), (-radius * 0.65, 0)])
    if shape == "triangle":
        return _convex(px, py, _regular(3, radius, -math.pi / 2))
    if shape == "hexagon":
        return _convex(px, py, _regular(6, radius, math.pi / 6))
    if shape == "pentagon":
        return _convex(px, py, _regular(5, radius, -math.pi / 2))
    if shape == "star":  # not convex: coverage from an even-odd test on a 4 x 4 subpixel grid
        outer, inner = _regular(5, radius * 1.1, -math.pi / 2), _regular(5, radius * 0.45, -math.pi / 2 + math.pi / 5)
        corners = [point for pair in zip(outer, inner) for point in pair]
        coverage = np.zeros(px.shape, np.float32)
        for oy in np.arange(4, dtype=np.float32) / 4 - 0.375:
            for ox in np.arange(4, dtype=np.float32) / 4 - 0.375:
                coverage += _inside(px + c * ox + s * oy, py - s * ox + c * oy, corners) / 16
        return 0.5 - coverage  # a stand-in distance that gives back this coverage (see _coverage)
    raise ValueError(f"unknown shape {shape!r}")


def _regular(sides: int, radius: float, start: float) -> list[tuple[float, float]]:
    return [(radius * math.cos(start + 2 * math.pi * i / sides), radius * math.sin(start + 2 * math.pi * i / sides)) for i in range(sides)]


def _inside(px: np.ndarray, py: np.ndarray, corners: list[tuple[float, float]]) -> np.ndarray:
    """1.0 where (px, py) is inside the polygon (even-odd rule), else 0.0."""
    inside = np.zeros(px.shape, bool)
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1]):
        crosses = (ay > py) != (by > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = ax + (py - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (px < x_at)
    return inside.astype(np.float32)


def _box(px: np.ndarray, py: np.ndarray, half_w: float, half_h: float) -> np.ndarray:
    dx, dy = np.abs(px) - half_w, np.abs(py) - half_h
    outside = np.hypot(np.maximum(dx, 0), np.maximum(dy, 0))
    return outside + np.minimum(np.maximum(dx, dy), 0)


def _convex(px: np.ndarray, py: np.ndarray, corners: list[tuple[float, float]]) -> np.ndarray:
    """Signed distance (exact inside, a lower bound outside) to a convex polygon, corners in either order."""
    area = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(corners, corners[1:] + corners[:1]))
    if area < 0:
        corners = corners[::-1]
    distance = np.full(px.shape, -np.inf, np.float32)
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1]):
        nx, ny = by - ay, -(bx - ax)  # outward normal of a counter-clockwise edge (y pointing down)
        length = math.hypot(nx, ny)
        distance = np.maximum(distance, ((px - ax) * nx + (py - ay) * ny) / length)
    return distance


def _coverage(distance: np.ndarray) -> np.ndarray:
    return np.clip(0.5 - distance, 0.0, 1.0)


def _paint(page: np.ndarray, coverage: np.ndarray, ink: np.ndarray) -> np.ndarray:
    return page * (1 - coverage[..., None]) + ink * coverage[..., None]


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
