"""clipstore-mini retrieval quality on render-world pairs it never saw in training.

Two sets of 1,000 (image, prompt) pairs rendered at 128 px:
- "unseen samples": the train split's distribution, from a seed the training never used;
- "held-out combinations": shape/colour pairs that never occur in training at all.
For each set: image->text and text->image Recall@1/5/10 among the 1,000 pairs (for each image, is its own
prompt among the k most similar of the 1,000 prompts, and the reverse).

    python benchmarks/mini_retrieval.py [--model clipstore-mini] [--n 1000] [--precision auto]
"""

from __future__ import annotations

import argparse

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


if __name__ == "__main__":
    main()
