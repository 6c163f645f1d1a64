"""The seed's data augmentations (001 §3.5.1): random rotations, flips and crops of images; synonym replacement
and word shuffling of prompts.

Horizontal flips are skipped for prompts that mention left or right (a flip would make the prompt wrong).
Text augmentations keep every comma-separated phrase intact when shuffling (prompts are phrase lists), and
replace words only from a small built-in synonym table of common prompt vocabulary.
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from PIL import Image

_SIDED = re.compile(r"\b(left|right)\b", re.IGNORECASE)

SYNONYMS: dict[str, tuple[str, ...]] = {
    "big": ("large", "huge"),
    "large": ("big", "huge"),
    "small": ("little", "tiny"),
    "little": ("small", "tiny"),
    "tiny": ("small", "little"),
    "picture": ("image", "photo"),
    "image": ("picture", "photo"),
    "photo": ("photograph", "picture"),
    "photograph": ("photo", "picture"),
    "beautiful": ("pretty", "lovely"),
    "pretty": ("beautiful", "lovely"),
    "shiny": ("glossy", "gleaming"),
    "bright": ("vivid", "brilliant"),
    "dark": ("dim", "shadowy"),
    "old": ("ancient", "aged"),
    "ancient": ("old", "antique"),
    "detailed": ("intricate", "elaborate"),
    "intricate": ("detailed", "elaborate"),
    "background": ("backdrop",),
    "backdrop": ("background",),
    "drawing": ("sketch", "illustration"),
    "illustration": ("drawing", "artwork"),
    "painting": ("artwork", "canvas"),
    "centre": ("center", "middle"),
    "center": ("centre", "middle"),
    "middle": ("centre", "center"),
    "striped": ("banded", "stripy"),
    "dotted": ("spotted", "polka-dot"),
    "spotted": ("dotted",),
    "glowing": ("luminous", "radiant"),
    "city": ("town", "metropolis"),
    "forest": ("woods", "woodland"),
    "ocean": ("sea",),
    "sea": ("ocean",),
    "mountain": ("peak",),
    "cat": ("kitten",),
    "dog": ("puppy", "hound"),
    "car": ("automobile", "vehicle"),
    "house": ("home", "cottage"),
    "woman": ("lady",),
    "man": ("gentleman", "guy"),
    "girl": ("young woman",),
    "boy": ("young man",),
    "with": ("featuring",),
}


def mentions_sides(prompt: str) -> bool:
    return bool(_SIDED.search(prompt))


def replace_synonyms(text: str, rng: random.Random, rate: float = 0.3) -> str:
    """Each word found in the synonym table is swapped for a synonym with probability `rate`."""

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        options = SYNONYMS.get(word.lower())
        if not options or rng.random() >= rate:
            return word
        choice = rng.choice(options)
        return choice.capitalize() if word[0].isupper() else choice

    return re.sub(r"[A-Za-z][A-Za-z-]*", swap, text)


def shuffle_words(text: str, rng: random.Random) -> str:
    """Shuffle comma-separated phrases (all but the first, which usually names the subject); a prompt that is a
    single phrase gets one random pair of neighbouring words swapped."""
    phrases = [p.strip() for p in text.split(",")]
    phrases = [p for p in phrases if p]
    if len(phrases) >= 3:
        rest = phrases[1:]
        rng.shuffle(rest)
        return ", ".join([phrases[0]] + rest)
    words = text.split()
    if len(words) >= 3:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def text_variants(text: str, count: int, rng: random.Random) -> list[str]:
    """`count` augmented variants of a prompt (synonyms, then a shuffle half of the time)."""
    variants = []
    for _ in range(count):
        variant = replace_synonyms(text, rng)
        if rng.random() < 0.5:
            variant = shuffle_words(variant, rng)
        variants.append(variant)
    return variants


def image_augmenter(image_size: int, mean, std, *, rotation: float = 15.0, crop_scale: tuple[float, float] = (0.7, 1.0)) -> Callable[["Image.Image", bool, random.Random], "object"]:
    """A function (image, may_flip, rng) -> normalised tensor (3, S, S): random rotation, crop and flip."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF
    from torchvision.transforms import RandomResizedCrop

    def augment(image: "Image.Image", may_flip: bool, rng: random.Random):
        torch.manual_seed(rng.randrange(2**31))
        angle = rng.uniform(-rotation, rotation)
        image = TF.rotate(image, angle, interpolation=InterpolationMode.BILINEAR, fill=_edge_colour(image))
        top, left, height, width = RandomResizedCrop.get_params(image, scale=crop_scale, ratio=(0.85, 1.0 / 0.85))
        image = TF.resized_crop(image, top, left, height, width, [image_size, image_size], interpolation=InterpolationMode.BICUBIC, antialias=True)
        if may_flip and rng.random() < 0.5:
            image = TF.hflip(image)
        tensor = TF.to_tensor(image)
        return TF.normalize(tensor, mean, std)

    return augment


def _edge_colour(image: "Image.Image") -> list[int]:
    """The colour of the top-left pixel: rotation fills the corners with it instead of black."""
    pixel = image.getpixel((0, 0))
    return list(pixel) if isinstance(pixel, tuple) else [int(pixel)] * 3
