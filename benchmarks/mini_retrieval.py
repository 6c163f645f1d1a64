"""clipstore-mini retrieval quality on pairs it never saw in training, in and outside the render world.

Two sets of 1,000 (image, prompt) pairs rendered at 128 px by the render world:
- "unseen samples": the train split's distribution, from a seed the training never used;
- "held-out combinations": shape/colour pairs that never occur in training at all.
Held-out combinations use only about one pair in seven, so each image has ~60 look-alikes of its own shape and
colour among the 1,000 and is told apart by the rest of the scene (size, position, style...); unseen samples
spread over every seen pair (~11 look-alikes each). To tell "worse on new combinations" from "worse at the rest
of the scene", a third row, "seen combinations, held-out density", draws 1,000 train-split samples from as many
*seen* pairs as the held-out set has (mean of --pair-draws random choices of those pairs). One draw of 1,000
held-out pairs has a standard error of about 1 point at R@1 ~0.9, so a fourth row gives the mean over
--heldout-draws independent held-out sets (seeds EVAL_SEED, EVAL_SEED + 1, ...; the first is the row above):
compare models on that mean, not on one draw.
For each set: image->text and text->image Recall@1/5/10 among the 1,000 pairs (for each image, is its own
prompt among the k most similar of the 1,000 prompts, and the reverse).

Then the held-out drawing styles of `tests/heldout_styles.py` (evaluation-only code that shares nothing with
the training renderer): per style, sets of one drawing per (colour, shape) pair (8 x 9 = 72) with the prompt
"a <colour> <shape>"; Recall@1/5 among the 72, averaged over --seeds sets.

    python benchmarks/mini_retrieval.py [--model clipstore-mini] [--n 1000] [--precision auto] [--seeds 5]
        [--pair-draws 3] [--heldout-draws 6]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from clipstore.encoders.clip import ClipEncoder
from clipstore.encoders.identity import resolve_model
from clipstore.world import generate
from clipstore.world.pretrain import retrieval_scores

EVAL_SEED = 1000  # training used seed 0 (and seed 1 for its validation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="clipstore-mini")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pair-draws", type=int, default=3)
    parser.add_argument("--heldout-draws", type=int, default=6)
    args = parser.parse_args()

    encoder = ClipEncoder(resolve_model(args.model), device="cpu", precision=args.precision)
    print(f"{encoder.identity.spec}, precision {encoder.precision}, {args.n} pairs per set, 128 px renders\n")
    print("| set | direction | R@1 | R@5 | R@10 |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, split in (("unseen samples", "train"), ("held-out combinations", "heldout")):
        samples = list(generate(args.n, seed=EVAL_SEED, split=split, size=128))
        images = encoder.encode_images([s.image for s in samples])
        texts = encoder.encode_texts([s.prompt for s in samples])
        scores = retrieval_scores(images, texts)
        for direction, recall in (("image→text", scores.image_to_text), ("text→image", scores.text_to_image)):
            print(f"| {name} | {direction} | {recall[1]:.3f} | {recall[5]:.3f} | {recall[10]:.3f} |")
        if split == "heldout":
            held_pairs = len({_pair(s) for s in samples})
    sets = (dense_seen_set(args.n, held_pairs, draw) for draw in range(args.pair_draws))
    _print_mean_rows(f"seen combinations, held-out density ({held_pairs} pairs)", encoder, sets)
    if args.heldout_draws > 1:
        sets = (list(generate(args.n, seed=EVAL_SEED + draw, split="heldout", size=128)) for draw in range(args.heldout_draws))
        _print_mean_rows(f"held-out combinations, mean of {args.heldout_draws} draws", encoder, sets)

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from heldout_styles import STYLES, styled_set

    print(f"\nheld-out drawing styles: one drawing per (colour, shape) pair, prompt \"a <colour> <shape>\", "
          f"mean of {args.seeds} sets\n")
    print("| style | pairs | image→text R@1 | R@5 | text→image R@1 | R@5 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    per_style = []
    for style in STYLES:
        runs = []
        for seed in range(args.seeds):
            pairs = styled_set(style, seed)
            scores = retrieval_scores(encoder.encode_images([p.image for p in pairs]), encoder.encode_texts([p.prompt for p in pairs]))
            runs.append((scores.image_to_text[1], scores.image_to_text[5], scores.text_to_image[1], scores.text_to_image[5]))
        means = np.mean(runs, axis=0)
        per_style.append(means)
        print(f"| {style} | {len(pairs)} | {means[0]:.3f} | {means[1]:.3f} | {means[2]:.3f} | {means[3]:.3f} |", flush=True)
    means = np.mean(per_style, axis=0)
    print(f"| mean of the styles | | {means[0]:.3f} | {means[1]:.3f} | {means[2]:.3f} | {means[3]:.3f} |")


def _print_mean_rows(name: str, encoder: ClipEncoder, sample_sets) -> None:
    """Two table rows: Recall@1/5/10 both ways, averaged over the sample sets."""
    draws = []
    for samples in sample_sets:
        scores = retrieval_scores(encoder.encode_images([s.image for s in samples]), encoder.encode_texts([s.prompt for s in samples]))
        draws.append([scores.image_to_text[k] for k in (1, 5, 10)] + [scores.text_to_image[k] for k in (1, 5, 10)])
    means = np.mean(draws, axis=0)
    print(f"| {name} | image→text | {means[0]:.3f} | {means[1]:.3f} | {means[2]:.3f} |")
    print(f"| {name} | text→image | {means[3]:.3f} | {means[4]:.3f} | {means[5]:.3f} |", flush=True)


def _pair(sample) -> tuple[str, str]:
    return sample.labels["shape"], sample.labels["colour"]


def dense_seen_set(n: int, pairs: int, draw: int) -> list:
    """n train-split samples (seed EVAL_SEED + 1 + draw) from `pairs` seen shape/colour pairs chosen at random."""
    import random

    from clipstore.world import COLOURS, SHAPES, is_heldout_combination

    seen = [(shape, colour) for shape in SHAPES for colour in COLOURS if not is_heldout_combination(shape, colour)]
    chosen = set(random.Random(f"dense-seen:{draw}").sample(seen, pairs))
    samples, start, chunk = [], 0, 4 * n
    while len(samples) < n:
        samples += [s for s in generate(chunk, seed=EVAL_SEED + 1 + draw, split="train", size=128, start=start) if _pair(s) in chosen]
        start += chunk
    return samples[:n]


if __name__ == "__main__":
    main()
