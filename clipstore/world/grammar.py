"""The render world's prompt language: scenes (structured attributes) and the prompts that describe them.

A Scene is what gets drawn; `describe` writes one of many paraphrases of it. The attribute space is
9 shapes x 12 colours x 3 sizes x 4 counts x 9 positions x 8 background colours x 5 patterns x 3 styles x
3 textures. One shape/colour pair in about seven is *held out*: it is only ever drawn in the "heldout" split,
so a model trained on "train" is tested on combinations it has never seen.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from clipstore.errors import InvalidOptionError

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "ring", "pentagon")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "orange": (245, 130, 30),
    "yellow": (240, 215, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 200),
    "purple": (130, 60, 175),
    "pink": (240, 120, 180),
    "brown": (140, 86, 60),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
    "cyan": (40, 200, 210),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "black": (12, 12, 12),
    "grey": (150, 150, 150),
    "beige": (225, 205, 170),
    "light blue": (170, 210, 240),
    "dark green": (25, 80, 40),
    "navy": (20, 30, 80),
    "lavender": (205, 190, 235),
}
SIZES = ("small", "medium", "large")
COUNTS = (1, 2, 3, 4)
POSITIONS = (
    "center",
    "top left",
    "top",
    "top right",
    "left",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
PATTERNS = ("plain", "striped", "checkered", "dotted", "gradient")
STYLES = ("filled", "outline", "sketch")
TEXTURES = ("solid", "striped", "spotted")
SPLITS = ("train", "heldout")

_SIZE_WORDS = {
    "small": ("small", "tiny", "little"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big", "huge"),
}
_COUNT_WORDS = {1: ("a", "one", "a single"), 2: ("two",), 3: ("three",), 4: ("four",)}
_PLURALS = {"cross": "crosses"}
_POSITION_PHRASES = {
    "center": ("in the center", "in the middle", "centered"),
    "top": ("at the top", "near the top edge"),
    "bottom": ("at the bottom", "near the bottom edge"),
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
}
_PATTERN_WORDS = {
    "plain": ("plain", ""),
    "striped": ("striped",),
    "checkered": ("checkered", "checkerboard"),
    "dotted": ("dotted", "polka-dot"),
    "gradient": ("gradient", "fading"),
}
_BACKGROUND_NOUNS = ("background", "backdrop")
_TEMPLATES = (
    "{objects} {position} on {background}",
    "{objects} on {background}, {position}",
    "a picture of {objects} {position} on {background}",
    "an image showing {objects} {position}, {background}",
    "{background}, with {objects} {position}",
    "{objects} placed {position} against {background}",
)


@dataclass(frozen=True)
class Scene:
    """Everything the renderer draws. `position` is "scattered" when count > 1."""

    shape: str
    colour: str
    size: str
    count: int
    position: str
    background: str
    pattern: str
    style: str
    texture: str

    def labels(self) -> dict[str, Any]:
        """The structured attributes (`shape` is the main object class)."""
        return asdict(self)


def is_heldout_combination(shape: str, colour: str) -> bool:
    """True for the shape/colour pairs reserved for the held-out split (about one in seven)."""
    return (SHAPES.index(shape) * 5 + list(COLOURS).index(colour) * 3) % 7 == 0


def sample_scene(rng: random.Random, split: str = "train") -> Scene:
    """Draw a random scene of `split` ("train": never a held-out pair; "heldout": only held-out pairs)."""
    if split not in SPLITS:
        raise InvalidOptionError(f"split must be one of {SPLITS}, not {split!r}")
    while True:
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        if is_heldout_combination(shape, colour) == (split == "heldout"):
            break
    background = rng.choice([name for name in BACKGROUNDS if _contrasts(colour, name)])
    count = rng.choices(COUNTS, weights=(5, 2, 2, 1))[0]
    style = rng.choices(STYLES, weights=(5, 2, 2))[0]
    return Scene(
        shape=shape,
        colour=colour,
        size=rng.choice(SIZES),
        count=count,
        position=rng.choice(POSITIONS) if count == 1 else "scattered",
        background=background,
        pattern=rng.choices(PATTERNS, weights=(4, 1, 1, 1, 1))[0],
        style=style,
        # Rings are drawn as a thick band, too thin to show a texture.
        texture=rng.choices(TEXTURES, weights=(4, 1, 1))[0] if style == "filled" and shape != "ring" else "solid",
    )


_LIGHT_BACKGROUNDS = {"white": 6, "beige": 1, "light blue": 1, "lavender": 1, "grey": 1}  # name: weight


def sample_simple_scene(rng: random.Random, split: str = "train") -> Scene:
    """A scene as most people draw one: a single medium or large shape, usually filled, on a plain light
    background (mostly white), anywhere in the image. `sample_scene` makes these rarely (about 1 in 40);
    world v2 mixes in a share of them (`PretrainConfig.simple_share`). Same split rule as `sample_scene`."""
    if split not in SPLITS:
        raise InvalidOptionError(f"split must be one of {SPLITS}, not {split!r}")
    while True:
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        if is_heldout_combination(shape, colour) == (split == "heldout"):
            break
    backgrounds = [name for name in _LIGHT_BACKGROUNDS if _contrasts(colour, name)] or ["black"]  # white on black
    background = rng.choices(backgrounds, weights=[_LIGHT_BACKGROUNDS.get(name, 1) for name in backgrounds])[0]
    return Scene(
        shape=shape,
        colour=colour,
        size=rng.choices(SIZES, weights=(1, 3, 3))[0],
        count=1,
        position=rng.choices(POSITIONS, weights=[4] + [1] * (len(POSITIONS) - 1))[0],
        background=background,
        pattern="plain",
        style=rng.choices(STYLES, weights=(13, 6, 1))[0],
        texture="solid",
    )


def describe(scene: Scene, rng: random.Random) -> str:
    """One paraphrase of a prompt that states every attribute the scene shows."""
    size = rng.choice(_SIZE_WORDS[scene.size])
    noun = scene.shape if scene.count == 1 else _PLURALS.get(scene.shape, scene.shape + "s")
    count = rng.choice(_COUNT_WORDS[scene.count])
    objects = f"{count} {size} {scene.colour} {noun}"
    if scene.style == "outline":
        objects = rng.choice((f"{objects} drawn in outline", f"the outline of {objects}", f"{objects}, outline only"))
    elif scene.style == "sketch":
        objects = rng.choice((f"a sketch of {objects}", f"{objects} sketched by hand", f"a rough sketch of {objects}"))
    elif scene.texture != "solid":
        texture = {"striped": ("striped", "with stripes"), "spotted": ("spotted", "with spots")}[scene.texture]
        objects = f"{objects} {rng.choice(texture)}"
    if scene.count == 1 and objects.startswith("a ") and size[0] in "aeiou":
        objects = "an " + objects[2:]
    return rng.choice(_TEMPLATES).format(
        objects=objects, position=_position_phrase(scene, rng), background=_background_phrase(scene, rng)
    ).strip()


def _position_phrase(scene: Scene, rng: random.Random) -> str:
    if scene.count > 1:
        return rng.choice(("scattered around", "spread out", "scattered across the image"))
    if scene.position in _POSITION_PHRASES:
        return rng.choice(_POSITION_PHRASES[scene.position])
    return rng.choice((f"in the {scene.position} corner", f"at the {scene.position}"))


def _background_phrase(scene: Scene, rng: random.Random) -> str:
    pattern = rng.choice(_PATTERN_WORDS[scene.pattern])
    words = " ".join(word for word in (pattern, scene.background, rng.choice(_BACKGROUND_NOUNS)) if word)
    return f"an {words}" if words[0] in "aeiou" else f"a {words}"


def _contrasts(colour: str, background: str) -> bool:
    """Whether an object of `colour` stays clearly visible on `background`."""
    fg, bg = COLOURS[colour], BACKGROUNDS[background]
    return sum(abs(a - b) for a, b in zip(fg, bg)) >= 150


ATTRIBUTES = ("shape", "colour", "size", "count", "position", "background", "pattern", "style", "texture")
"""The attributes of a Scene, in a fixed order (a prompt states some or all of them)."""

_SHORT_TEMPLATES = (
    "{objects}",
    "{objects}",
    "a drawing of {objects}",
    "a picture of {objects}",
    "an image of {objects}",
    "a photo of {objects}",
    "a simple illustration of {objects}",
    "{objects}{where}",
    "a picture of {objects}{where}",
)
_VAGUE_NOUNS = ("shape", "object", "thing")
_VAGUE_PLURALS = ("shapes", "objects", "things")


def describe_partial(scene: Scene, rng: random.Random) -> tuple[str, frozenset[str]]:
    """A short prompt that states only some of the scene's attributes, and which ones it states.

    Users search with "a red circle" or "two stars", not with the full description `describe` writes. Each
    attribute named is true of the scene; the ones left out say nothing (an image of three red circles on a
    striped background is also "red circles"). `count` is always stated (by "a" or a number), and at least
    one of shape and colour is.
    """
    stated = {"count"}
    shape_named = rng.random() < 0.9
    colour_named = rng.random() < 0.65 or not shape_named  # "two stars": shape alone, whatever the colour
    if scene.count == 1:
        noun = scene.shape if shape_named else rng.choice(_VAGUE_NOUNS)
        count = rng.choice(("a", "a", "one", "a single"))
    else:
        noun = _PLURALS.get(scene.shape, scene.shape + "s") if shape_named else rng.choice(_VAGUE_PLURALS)
        count = rng.choice(_COUNT_WORDS[scene.count])
    words = [count]
    if rng.random() < 0.3:
        words.append(rng.choice(_SIZE_WORDS[scene.size]))
        stated.add("size")
    if colour_named:
        words.append(scene.colour)
        stated.add("colour")
    if scene.texture != "solid" and rng.random() < 0.5:
        words.append({"striped": "striped", "spotted": "spotted"}[scene.texture])
        stated.add("texture")
    words.append(noun)
    if shape_named:
        stated.add("shape")
    objects = " ".join(words)
    if scene.count == 1 and objects.startswith("a ") and objects[2] in "aeiou":
        objects = "an " + objects[2:]
    if scene.style != "filled" and rng.random() < 0.5:
        objects = f"{objects} in outline" if scene.style == "outline" else f"a sketch of {objects}"
        stated.add("style")
    where = ""
    if rng.random() < 0.3:
        where = " " + _position_phrase(scene, rng)
        stated.add("position")
    if rng.random() < 0.35:
        pattern = rng.choice(_PATTERN_WORDS[scene.pattern]) if rng.random() < 0.6 else ""
        words_bg = " ".join(word for word in (pattern, scene.background, rng.choice(_BACKGROUND_NOUNS)) if word)
        where += f" on {'an' if words_bg[0] in 'aeiou' else 'a'} {words_bg}"
        stated.add("background")
        if pattern:
            stated.add("pattern")
    template = rng.choice(_SHORT_TEMPLATES)
    text = template.format(objects=objects, where=where) if "{where}" in template else template.format(objects=objects) + where
    return text.strip(), frozenset(stated)
