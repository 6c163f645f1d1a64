"""World v2: the same scenes drawn with far more variety, so a model trained on them learns shape and colour
rather than one renderer's style.

`render_varied(scene, size, rng)` draws exactly what `scene` says (every attribute a prompt can state stays
true) but varies everything a prompt does not state: the exact shade of each colour, object size within its
size class, aspect, rotation, stroke width, position within its region, the rasteriser (aliased or
antialiased), photo-like backgrounds (smooth light fields, vignettes), low-contrast clutter (stray lines,
specks, scribbles), sensor noise, blur, low resolution and JPEG artefacts. A share of samples is drawn by the
world-v1 renderer unchanged, so world-v1's own test sets stay in the training distribution.

Like world v1, all randomness comes from the `random.Random` passed in: a seed always gives the same pixels.
"""

from __future__ import annotations

import colorsys
import io
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from clipstore.world.grammar import BACKGROUNDS, COLOURS, Scene
from clipstore.world.render import _ANCHORS, _background, _outline, _shade, _texture, render_scene

V1_SHARE = 0.3
"""Share of samples drawn by the world-v1 renderer unchanged."""

_RADIUS_RANGE = {"small": (0.08, 0.14), "medium": (0.15, 0.21), "large": (0.23, 0.32)}  # of the image side
_MAX_TURN = {  # radians a shape may turn and still be named the same (a square turned 45 degrees is a diamond)
    "square": 0.3, "diamond": 0.2, "cross": 0.35, "triangle": 0.5, "pentagon": 0.6, "hexagon": 0.6, "star": 0.6,
}
_ACHROMATIC = {"black", "white", "grey"}


def render_varied(scene: Scene, size: int, rng: random.Random, v1_share: float = V1_SHARE) -> Image.Image:
    """An RGB image of `size` x `size` pixels showing exactly `scene`, in a randomly varied style (or, with
    probability `v1_share`, drawn by the world-v1 renderer unchanged)."""
    if rng.random() < v1_share:
        return render_scene(scene, size, rng)
    supersample = rng.choice((1, 2, 2, 3)) if size <= 128 else rng.choice((1, 2))
    side = size * supersample
    canvas = _varied_background(scene, side, rng)
    if rng.random() < 0.3:
        _clutter(canvas, scene, side, rng)
    low, high = _RADIUS_RANGE[scene.size]
    radius = rng.uniform(low, high) * side * (1.0 if scene.count == 1 else 0.7)
    if scene.count == 1 and scene.position != "center":
        radius = min(radius, 0.22 * side)
    for centre in _varied_centres(scene, side, radius, rng):
        _draw_varied_object(canvas, scene, centre, radius * rng.uniform(0.85, 1.15), rng)
    if supersample > 1:
        canvas = canvas.resize((size, size), rng.choice((Image.Resampling.LANCZOS, Image.Resampling.BILINEAR, Image.Resampling.BOX)))
    return _degrade(canvas, rng)


def varied_colour(name: str, rng: random.Random) -> tuple[int, int, int]:
    """A shade of the named colour that a person would still call by that name."""
    r, g, b = (c / 255 for c in COLOURS[name])
    if name in _ACHROMATIC:
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        v = {"black": rng.uniform(0.0, 0.16), "white": rng.uniform(0.9, 1.0), "grey": rng.uniform(0.42, 0.6)}[name]
        tint = rng.uniform(-0.03, 0.03)
        r, g, b = (min(1.0, max(0.0, v + tint * k)) for k in (1, 0, -1))
        return tuple(int(round(c * 255)) for c in (r, g, b))  # type: ignore[return-value]
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    h = (h + rng.uniform(-0.02, 0.02)) % 1.0
    s = min(1.0, s * rng.uniform(0.82, 1.06))
    v = min(1.0, v * rng.uniform(0.86, 1.07))
    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]


def _varied_background(scene: Scene, side: int, rng: random.Random) -> Image.Image:
    if scene.pattern != "plain" or rng.random() < 0.25:
        image = _background(scene, side, rng)
    else:
        base = np.asarray(BACKGROUNDS[scene.background], np.float32) + np.asarray([rng.uniform(-10, 10) for _ in range(3)], np.float32)
        image = Image.fromarray(np.broadcast_to(np.clip(base, 0, 255), (side, side, 3)).astype(np.uint8))
    if rng.random() < 0.35:  # a photo-like smooth light field: uneven lighting, a vignette
        grid = np.random.default_rng(rng.getrandbits(64)).normal(0.0, rng.uniform(4, 14), (4, 4)).astype(np.float32)
        field = np.asarray(Image.fromarray(grid, mode="F").resize((side, side), Image.Resampling.BICUBIC))
        if rng.random() < 0.4:
            y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side - 0.5
            field = field - rng.uniform(10, 35) * (x * x + y * y)
        pixels = np.asarray(image, np.float32) + field[:, :, None]
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image


def _clutter(canvas: Image.Image, scene: Scene, side: int, rng: random.Random) -> None:
    """Low-contrast marks that are not objects: stray lines, specks and scribbles in shades of the background."""
    draw = ImageDraw.Draw(canvas)
    base = BACKGROUNDS[scene.background]
    for _ in range(rng.randint(1, 6)):
        shade = _shade(base, rng.choice((-1, 1)) * rng.uniform(0.12, 0.3))
        kind = rng.random()
        width = max(1, int(side * rng.uniform(0.004, 0.012)))
        if kind < 0.4:
            draw.line([(rng.uniform(0, side), rng.uniform(0, side)) for _ in range(2)], fill=shade, width=width)
        elif kind < 0.7:
            points = [(rng.uniform(0, side), rng.uniform(0, side))]
            for _ in range(rng.randint(3, 8)):
                x, y = points[-1]
                points.append((x + rng.uniform(-0.08, 0.08) * side, y + rng.uniform(-0.08, 0.08) * side))
            draw.line(points, fill=shade, width=width, joint="curve")
        else:
            for _ in range(rng.randint(5, 30)):
                x, y, r = rng.uniform(0, side), rng.uniform(0, side), side * rng.uniform(0.003, 0.01)
                draw.ellipse((x - r, y - r, x + r, y + r), fill=shade)


def _varied_centres(scene: Scene, side: int, radius: float, rng: random.Random) -> list[tuple[float, float]]:
    if scene.count == 1:
        ax, ay = _ANCHORS[scene.position]
        jitter = 0.07 * side if scene.position != "center" else 0.05 * side
        clamp = lambda v: min(side - radius * 1.05, max(radius * 1.05, v))  # noqa: E731 - keep the object inside
        return [(clamp(ax * side + rng.uniform(-jitter, jitter)), clamp(ay * side + rng.uniform(-jitter, jitter)))]
    centres: list[tuple[float, float]] = []
    margin = radius * 1.1
    for _ in range(600):
        candidate = (rng.uniform(margin, side - margin), rng.uniform(margin, side - margin))
        if all(math.dist(candidate, other) > 2.15 * radius for other in centres):
            centres.append(candidate)
            if len(centres) == scene.count:
                return centres
    cells = [(0.27, 0.27), (0.73, 0.73), (0.73, 0.27), (0.27, 0.73)]
    return [(x * side, y * side) for x, y in cells[: scene.count]]


def _draw_varied_object(canvas: Image.Image, scene: Scene, centre: tuple[float, float], radius: float, rng: random.Random) -> None:
    colour = varied_colour(scene.colour, rng)
    turn = _MAX_TURN.get(scene.shape, 0.0)
    angle = rng.uniform(-turn, turn)
    stretch = rng.uniform(0.88, 1.12)  # aspect: x and y scaled apart, area kept
    cx, cy = centre
    points = [(cx + (x - cx) * stretch, cy + (y - cy) / stretch) for x, y in _outline(scene.shape, centre, radius, angle)]
    rx, ry = radius * stretch, radius / stretch
    box = (cx - rx, cy - ry, cx + rx, cy + ry)
    draw = ImageDraw.Draw(canvas)
    if scene.style == "sketch":
        width = max(1, int(radius * rng.uniform(0.04, 0.1)))
        for _ in range(rng.randint(2, 4)):
            wobble = radius * rng.uniform(0.03, 0.08)
            if points:
                shaky = [(x + rng.uniform(-wobble, wobble), y + rng.uniform(-wobble, wobble)) for x, y in points]
                draw.line(shaky + shaky[:1], fill=colour, width=width, joint="curve")
            else:
                dx, dy = rng.uniform(-wobble, wobble), rng.uniform(-wobble, wobble)
                draw.ellipse((box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy), outline=colour, width=width)
        return
    if scene.style == "outline" or scene.shape == "ring":
        width = int(radius * (rng.uniform(0.07, 0.22) if scene.style == "outline" else rng.uniform(0.25, 0.42)))
        width = max(1, width)
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
    if rng.random() < 0.2:  # a soft drop shadow under a filled object
        offset = int(radius * rng.uniform(0.06, 0.14))
        shadow = mask.filter(ImageFilter.GaussianBlur(max(1, offset))).point(lambda value: int(value * 0.35))
        canvas.paste(Image.new("RGB", canvas.size, (0, 0, 0)), (offset, offset), shadow)
    fill = Image.new("RGB", canvas.size, colour)
    if scene.texture != "solid":
        _texture(fill, scene.texture, colour, box, rng)
    elif rng.random() < 0.25:  # gentle shading across a solid fill
        ramp = np.linspace(-1.0, 1.0, canvas.size[0], dtype=np.float32)[None, :, None] * rng.uniform(8, 22)
        pixels = np.asarray(fill, np.float32) + ramp
        fill = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    canvas.paste(fill, (0, 0), mask)
    if rng.random() < 0.15:  # a darker edge line around a filled shape
        edge = _shade(colour, -0.4)
        width = max(1, int(radius * 0.06))
        if points:
            draw.line(points + points[:1], fill=edge, width=width, joint="curve")
        else:
            draw.ellipse(box, outline=edge, width=width)


def _degrade(image: Image.Image, rng: random.Random) -> Image.Image:
    """Camera and file artefacts: low resolution, blur, sensor noise, JPEG compression (each sometimes)."""
    size = image.size
    if rng.random() < 0.15:
        factor = rng.uniform(0.35, 0.7)
        small = (max(8, int(size[0] * factor)), max(8, int(size[1] * factor)))
        image = image.resize(small, Image.Resampling.BILINEAR).resize(size, Image.Resampling.BICUBIC)
    if rng.random() < 0.25:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    sigma = rng.choice((0.0, 2.0, 4.0, rng.uniform(4.0, 12.0)))
    if sigma:
        noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, sigma, (size[1], size[0], 3))
        image = Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))
    if rng.random() < 0.35:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(15, 85))
        buffer.seek(0)
        image = Image.open(buffer).convert("RGB")
    return image
