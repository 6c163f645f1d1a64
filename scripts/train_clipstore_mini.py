"""Pretrain clipstore-mini on the render world (the recipes of the shipped weights).

    python scripts/train_clipstore_mini.py --out mini-v2.safetensors [--workers 15] [--time-budget-s 420] [...]
    python scripts/train_clipstore_mini.py --v1 --out mini-v1.safetensors      # world-v1's recipe, on CPU

Defaults are one phase of world v2's recipe (`PretrainConfig()`; `--v1`: `V1_CONFIG`); the world-v2 weights come
from a chain of phases, `scripts/world_v2_recipe.sh`. Every field can be overridden
(`--steps`, `--batch-size`, ...). It prints the loss and validation recall as it goes and the SHA-256 of the
written file at the end (clipstore checks that hash when it loads the bundled weights: update
MINI_WEIGHTS in clipstore/encoders/identity.py when you ship new weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from clipstore.encoders.identity import file_sha256
from clipstore.world.pretrain import V1_CONFIG, PretrainConfig, pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--v1", action="store_true", help="the world-v1 recipe (V1_CONFIG) instead of world v2's")
    for field in dataclasses.fields(PretrainConfig):
        if field.type in ("int", "float", "str"):
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=eval(field.type), default=None)
    args = parser.parse_args()
    defaults = V1_CONFIG if args.v1 else PretrainConfig()
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainConfig) if getattr(args, f.name, None) is not None}
    config = dataclasses.replace(defaults, **overrides)
    summary = pretrain(args.out, config, log=lambda line: print(line, flush=True, file=sys.stdout))
    print(f"done in {summary['seconds'] / 60:.1f} min; wrote {args.out}; sha256 {file_sha256(args.out)}")


if __name__ == "__main__":
    main()
