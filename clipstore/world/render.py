"""Drawing a Scene: shapes, styles and textures over a patterned background, with light noise and jitter.

Drawing happens at twice the output size and is downsampled (antialiasing); all randomness comes from the
`random.Random` passed in, so a seed always gives the same pixels.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from clipstore.world.grammar import BACKGROUNDS, COLOURS, Scene

_SUPERSAMPLE = 2
_RADIUS = {"small": 0.11, "medium": 0.18, "large": 0.27}  # of the image side, for a single object
_ANCHORS = {
    "center": (0.5, 0.5),
    "top left": (0.25, 0.25),
    "top": (0.5, 0.25),
    "top right": (0.75, 0.25),
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "bottom left": (0.25, 0.75),
    "bottom": (0.5, 0.75),
    "bottom right": (0.75, 0.75),
}


def render_scene(scene: Scene, size: int, rng: random.Random) -> Image.Image:
    """An RGB image of `size` x `size` pixels showing exactly `scene`."""
    side = size * _SUPERSAMPLE
    canvas = _background(scene, side, rng)
    radius = _RADIUS[scene.size] * side * (1.0 if scene.count == 1 else 0.7)
    if scene.position in _ANCHORS:
        radius = min(radius, 0.24 * side) if scene.position != "center" else radius
    for cx, cy in _centres(scene, side, radius, rng):
        _draw_object(canvas, scene, (cx, cy), radius * rng.uniform(0.9, 1.1), rng)
    image = canvas.resize((size, size), Image.Resampling.LANCZOS)
    return _add_noise(image, rng)


def _centres(scene: Scene, side: int, radius: float, rng: random.Random) -> list[tuple[float, float]]:
    jitter = 0.04 * side
    if scene.count == 1:
        ax, ay = _ANCHORS[scene.position]
        return [(ax * side + rng.uniform(-jitter, jitter), ay * side + rng.uniform(-jitter, jitter))]
    centres: list[tuple[float, float]] = []
    margin = radius * 1.05
    for _ in range(400):  # rejection sampling for non-overlapping objects
        candidate = (rng.uniform(margin, side - margin), rng.uniform(margin, side - margin))
        if all(math.dist(candidate, other) > 2.1 * radius for other in centres):
            centres.append(candidate)
            if len(centres) == scene.count:
                return centres
    # Crowded canvas: fall back to a grid, which always fits four objects of these sizes.
    cells = [(0.27, 0.27), (0.73, 0.73), (0.73, 0.27), (0.27, 0.73)]
    return [(x * side, y * side) for x, y in cells[: scene.count]]


def _shade(colour: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    """Lighter (amount > 0) or darker (amount < 0) version of a colour; dark colours always get lighter."""
    if sum(colour) < 150:
        amount = abs(amount)
    target = 255 if amount > 0 else 0
    return tuple(int(round(c + (target - c) * abs(amount))) for c in colour)  # type: ignore[return-value]


def _background(scene: Scene, side: int, rng: random.Random) -> Image.Image:
    base = BACKGROUNDS[scene.background]
    image = Image.new("RGB", (side, side), base)
    draw = ImageDraw.Draw(image)
    other = _shade(base, rng.choice((-0.18, 0.18)))
    if scene.pattern == "striped":
        step = int(side * rng.uniform(0.08, 0.14))
        for offset in range(-side, 2 * side, step):
            draw.polygon(
                [(offset, 0), (offset + step // 2, 0), (offset + step // 2 + side, side), (offset + side, side)], fill=other
            )
    elif scene.pattern == "checkered":
        step = int(side * rng.uniform(0.1, 0.17))
        for y in range(0, side, step):
            for x in range(0, side, step):
                if (x // step + y // step) % 2:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=other)
    elif scene.pattern == "dotted":
        step = int(side * rng.uniform(0.08, 0.12))
        dot = step * 0.18
        for y in range(step // 2, side, step):
            for x in range(step // 2, side, step):
                draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=other)
    elif scene.pattern == "gradient":
        ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
        pixels = np.asarray(base, np.float32) * (1 - ramp) + np.asarray(_shade(base, 0.45), np.float32) * ramp
        image = Image.fromarray(np.broadcast_to(pixels, (side, side, 3)).astype(np.uint8))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.ROTATE_90)
    return image


def _outline(shape: str, centre: tuple[float, float], radius: float, angle: float) -> list[tuple[float, float]]:
    """Polygon points of a shape (circles and rings are drawn as ellipses and return [])."""
    cx, cy = centre

    def polygon(corners: int, start: float, radii: tuple[float, ...] = (1.0,)) -> list[tuple[float, float]]:
        points = []
        for i in range(corners * len(radii)):
            theta = start + angle + 2 * math.pi * i / (corners * len(radii))
            r = radius * radii[i % len(radii)]
            points.append((cx + r * math.cos(theta), cy + r * math.sin(theta)))
        return points

    if shape == "square":
        return polygon(4, math.pi / 4, (0.95,))
    if shape == "diamond":
        return [(cx, cy - radius), (cx + radius * 0.7, cy), (cx, cy + radius), (cx - radius * 0.7, cy)]
    if shape == "triangle":
        return polygon(3, -math.pi / 2, (1.05,))
    if shape == "pentagon":
        return polygon(5, -math.pi / 2)
    if shape == "hexagon":
        return polygon(6, 0)
    if shape == "star":
        return polygon(5, -math.pi / 2, (1.05, 0.45))
    if shape == "cross":
        a, b = radius, radius * 0.33
        arm = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        cos, sin = math.cos(angle), math.sin(angle)
        return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in arm]
    return []


def _draw_object(canvas: Image.Image, scene: Scene, centre: tuple[float, float], radius: float, rng: random.Random) -> None:
    colour = COLOURS[scene.colour]
    angle = rng.uniform(-0.15, 0.15)
    points = _outline(scene.shape, centre, radius, angle)
    cx, cy = centre
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    line = max(2, int(radius * 0.16))
    draw = ImageDraw.Draw(canvas)
    if scene.style == "sketch":
        for _ in range(3):  # a few wobbly strokes over the same outline
            wobble = radius * 0.06
            if points:
                shaky = [(x + rng.uniform(-wobble, wobble), y + rng.uniform(-wobble, wobble)) for x, y in points]
                draw.line(shaky + shaky[:1], fill=colour, width=max(1, line // 2), joint="curve")
            else:
                dx, dy = rng.uniform(-wobble, wobble), rng.uniform(-wobble, wobble)
                draw.ellipse((box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy), outline=colour, width=max(1, line // 2))
        return
    if scene.style == "outline" or scene.shape == "ring":
        width = line if scene.style == "outline" else int(radius * 0.35)
        if points:
            draw.line(points + points[:1], fill=colour, width=width, joint="curve")
        else:
            draw.ellipse(box, outline=colour, width=width)
        return
    mask = Image.new("L", canvas.size, 0)
    mask_draw = ImageDraw.Draw(mask)
    if points:
        mask_draw.polygon(points, fill=255)
    else:
        mask_draw.ellipse(box, fill=255)
    fill = Image.new("RGB", canvas.size, colour)
    if scene.texture != "solid":
        _texture(fill, scene.texture, colour, box, rng)
    canvas.paste(fill, (0, 0), mask)


def _texture(fill: Image.Image, texture: str, colour: tuple[int, int, int], box: tuple[float, ...], rng: random.Random) -> None:
    draw = ImageDraw.Draw(fill)
    other = _shade(colour, -0.45)
    x0, y0, x1, y1 = (int(v) for v in box)
    size = max(4, x1 - x0)
    if texture == "striped":
        step = max(4, size // 5)
        for x in range(x0 - size, x1 + size, step):
            draw.line([(x, y0), (x + size, y1)], fill=other, width=max(2, step // 3))
    else:  # spotted
        step = max(4, size // 4)
        dot = step * 0.25
        for y in range(y0 + step // 2, y1, step):
            for x in range(x0 + step // 2, x1, step):
                draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=other)


def _add_noise(image: Image.Image, rng: random.Random) -> Image.Image:
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, 3.0, (image.height, image.width, 3))
    pixels = np.asarray(image, dtype=np.float32) + noise
    blurred = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return blurred.filter(ImageFilter.GaussianBlur(0.3)) if rng.random() < 0.3 else blurred
