"""Train Model A on a rendered set and describe images with the ensemble (offline, about a minute on a laptop).

    python examples/describe_images.py [OUT] [--n 400] [--epochs 20]

1. renders N render-world images whose PNGs carry their prompts (like Stable Diffusion outputs) into OUT/world,
   and a few images of shape/colour combinations it never drew into OUT/new;
2. ingests them into a clipstore-mini store: each image's prompt is stored with it and offered to the prompt bank;
3. trains Model A (head only, fast on a CPU) and lets training tune Model B and the ensemble alpha;
4. describes the new images and prints the best prompts next to the prompt each image was really drawn from.
"""

from __future__ import annotations

import argparse
import json
import os

import clipstore
from clipstore.world import render_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="describe-example")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--show", type=int, default=4)
    args = parser.parse_args()

    world = render_folder(os.path.join(args.out, "world"), args.n, seed=7)
    new = render_folder(os.path.join(args.out, "new"), args.show, seed=7, split="heldout")
    store = clipstore.connect(os.path.join(args.out, "example.clipstore"), model="clipstore-mini")
    report = store.ingest(world.folder)
    print(f"ingested {report.added} images; {report.prompts_found} carried a prompt, {report.prompts_inserted} kept in the bank")

    trained = store.train(freeze_vision=True, epochs=args.epochs)
    scores = ", ".join(f"{name} {value:.3f}" for name, value in trained.validation.items())
    print(f"trained head {trained.head_id}: validation Avg-Cos {scores}; alpha {trained.ensemble_alpha:g}")

    describer = store.describer()  # loads the newest head once for all images
    from clipstore.imaging import load_image

    with open(new.manifest, encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    for record in records:
        description = describer.describe_decoded(load_image(os.path.join(new.folder, record["path"])).image, top=2)
        print(f"\n{record['path']}")
        print(f"  drawn from: {record['prompt']}")
        for hit in description.prompts:
            print(f"  described:  {hit.text}  ({hit.score:.3f})")
        print(f"  ({description.method}, alpha {description.alpha:g})")


if __name__ == "__main__":
    main()
