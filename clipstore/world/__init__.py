"""The render world: a deterministic procedural text-to-image generator that draws exactly what its prompt says.

It stands in for the seeds' "images generated from prompts" setting, offline and reproducibly: every sample is
an (image, prompt, labels) triple, prompts are written in many paraphrases (so near-duplicates exist and the
0.85 dedup matters), and a held-out split contains shape/colour combinations never drawn in training.

    from clipstore.world import generate
    for sample in generate(10, seed=0):
        sample.image, sample.prompt, sample.labels
"""

from clipstore.world.grammar import COLOURS, SHAPES, SPLITS, Scene, describe, is_heldout_combination, sample_scene
from clipstore.world.render import render_scene
from clipstore.world.samples import WorldManifest, WorldSample, generate, render_folder

__all__ = [
    "COLOURS",
    "SHAPES",
    "SPLITS",
    "Scene",
    "WorldManifest",
    "WorldSample",
    "describe",
    "generate",
    "is_heldout_combination",
    "render_folder",
    "render_scene",
    "sample_scene",
]
