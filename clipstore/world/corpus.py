"""A generated prompt corpus in the style of text-to-image prompts, with many near-duplicates.

Used to test and benchmark the prompt bank at scale without downloading a corpus: each fresh prompt names a
subject (an adjective, a material and an object: ~300,000 combinations, or one of a list of scenes) in a
setting, a style, a lighting and a detail or two; about a third of the prompts are variants of a recent one
(one slot swapped, words reordered, a synonym), which puts many pairs near the 0.85 near-duplicate threshold
on both sides. A few render-world prompts are mixed in.
"""

from __future__ import annotations

import random

from clipstore.world.grammar import describe, sample_scene

_SUBJECTS = (
    "an old lighthouse keeper", "a red fox", "a cyberpunk samurai", "a tiny robot", "a medieval castle",
    "a sleeping dragon", "a bowl of ramen", "an astronaut cat", "a giant sea turtle", "a vintage motorcycle",
    "a wizard's library", "a snowy owl", "a floating island", "a steam locomotive", "a jazz musician",
    "a koi pond", "a desert caravan", "an abandoned greenhouse", "a crystal cave", "a street food vendor",
    "a lone wolf", "a paper boat", "a neon-lit diner", "a mountain monastery", "a hot air balloon",
    "a clockwork bird", "a sunflower field", "a ghost ship", "a bustling market", "a polar bear cub",
    "a treehouse village", "a knight in silver armor", "a mechanical spider", "a lavender farm",
    "an underwater city", "a gothic cathedral", "a racing car", "a chess grandmaster", "a bonsai tree",
    "a coral reef", "a thunderstorm over the plains", "a violin maker", "a lantern festival", "a glass teapot",
)
_ADJECTIVES = (
    "ancient", "tiny", "giant", "rusty", "glowing", "broken", "floating", "frozen", "burning", "haunted",
    "golden", "shattered", "mechanical", "overgrown", "translucent", "wooden", "colossal", "miniature",
    "forgotten", "enchanted", "crumbling", "polished", "hollow", "striped", "velvet", "smoky", "electric",
    "melting", "woven", "luminous", "weathered", "ornate", "sleek", "twisted", "sunken", "winged",
    "armored", "patchwork", "crystalline", "fuzzy",
)
_MATERIALS = (
    "brass", "porcelain", "marble", "copper", "paper", "glass", "jade", "obsidian", "silk", "clay", "ivory",
    "bamboo", "steel", "amber", "wool", "ceramic", "bronze", "driftwood", "leather", "coral", "chrome",
    "granite", "felt", "sandstone", "pewter",
)
_OBJECTS = (
    "teapot", "lantern", "clock tower", "violin", "submarine", "bicycle", "chess set", "lighthouse", "harp",
    "typewriter", "telescope", "carousel", "windmill", "gramophone", "hourglass", "compass", "throne",
    "birdcage", "music box", "chandelier", "pocket watch", "rocking horse", "kite", "canoe", "totem",
    "mask", "crown", "robot", "owl", "fox", "whale", "tortoise", "stag", "octopus", "hummingbird", "tiger",
    "jellyfish", "peacock", "elephant", "dragonfly", "mushroom", "cactus", "orchid", "bonsai", "sunflower",
    "pagoda", "cathedral", "bridge", "staircase", "fountain", "greenhouse", "observatory", "airship",
    "locomotive", "tram", "motorcycle", "sailboat", "astronaut", "samurai", "knight", "witch", "monk",
    "dancer", "violinist", "blacksmith", "gardener", "fisherman", "beekeeper", "cartographer", "alchemist",
)
_SETTINGS = (
    "at sunset", "in the rain", "on a foggy morning", "under the northern lights", "in a dense forest",
    "on a busy city street", "in outer space", "by the sea", "in a snowy valley", "inside a cozy cabin",
    "on the surface of mars", "in a bamboo grove", "at the edge of a cliff", "in a flooded subway",
    "in a wheat field", "on a rooftop at night", "in an ancient ruin", "beside a waterfall", "in a desert canyon",
    "at a night market", "in a candlelit room", "on a frozen lake", "in a cherry blossom park", "in a volcano",
)
_STYLES = (
    "oil painting", "watercolor", "digital art", "pencil sketch", "studio ghibli style", "art nouveau",
    "cinematic photograph", "low poly render", "ukiyo-e woodblock print", "pixel art", "charcoal drawing",
    "isometric illustration", "baroque painting", "comic book style", "3d render", "impressionist painting",
    "vaporwave aesthetic", "concept art", "stained glass", "papercut collage",
)
_LIGHTING = (
    "golden hour lighting", "dramatic rim light", "soft diffused light", "volumetric fog", "neon glow",
    "moody shadows", "bright midday sun", "bioluminescent light", "candle light", "overcast sky",
    "backlit silhouette", "studio lighting",
)
_DETAILS = (
    "highly detailed", "trending on artstation", "8k", "sharp focus", "intricate", "minimalist",
    "wide angle", "macro shot", "octane render", "award winning", "muted colors", "vibrant colors",
    "symmetrical composition", "bokeh", "film grain", "hyperrealistic",
)
_SYNONYMS = {
    "old": "elderly", "tiny": "small", "giant": "huge", "sleeping": "resting", "lone": "solitary",
    "busy": "crowded", "dense": "thick", "ancient": "old", "bright": "vivid", "highly detailed": "very detailed",
    "soft": "gentle", "dramatic": "striking", "vintage": "retro", "abandoned": "derelict", "bustling": "lively",
}


def prompt_corpus(n: int, seed: int = 0, world_share: float = 0.03) -> list[str]:
    """n prompts (deterministic per seed), about a third of them near-duplicate variants of earlier ones."""
    rng = random.Random(f"clipstore-corpus:{seed}")
    prompts: list[str] = []
    for _ in range(n):
        roll = rng.random()
        if roll < world_share:
            prompts.append(describe(sample_scene(rng), rng))
        elif roll < world_share + 0.33 and prompts:
            prompts.append(_variant(rng.choice(prompts[-5000:]), rng))
        else:
            prompts.append(_fresh(rng))
    return prompts


def _fresh(rng: random.Random) -> str:
    if rng.random() < 0.2:
        subject = rng.choice(_SUBJECTS)
    else:
        subject = f"{rng.choice(('a', 'the', 'an old', 'one'))} {rng.choice(_ADJECTIVES)} {rng.choice(_MATERIALS)} {rng.choice(_OBJECTS)}"
    details = rng.sample(_DETAILS, rng.randint(1, 2))
    return ", ".join([f"{subject} {rng.choice(_SETTINGS)}", rng.choice(_STYLES), rng.choice(_LIGHTING), *details])


def _variant(prompt: str, rng: random.Random) -> str:
    parts = prompt.split(", ")
    action = rng.random()
    if action < 0.3 and len(parts) > 2:
        rest = parts[1:]
        rng.shuffle(rest)
        parts = [parts[0], *rest]
    elif action < 0.6:
        words = prompt
        for word, synonym in _SYNONYMS.items():
            if word in words and rng.random() < 0.7:
                words = words.replace(word, synonym, 1)
        parts = words.split(", ")
        if words == prompt:
            parts.append(rng.choice(_DETAILS))
    elif action < 0.8:
        index = rng.randrange(len(parts))
        parts[index] = rng.choice((rng.choice(_STYLES), rng.choice(_LIGHTING), rng.choice(_DETAILS)))
    else:
        parts.append(rng.choice(_DETAILS))
    return ", ".join(dict.fromkeys(parts))
