"""Reproduce the shipped clipstore-mini weights: pretrain from scratch on the render world, on CPU.

    python scripts/train_clipstore_mini.py [--out clipstore/weights/clipstore-mini.safetensors] [--steps 1500]

Defaults are the shipped run's settings (seed 0). It prints the loss and validation recall as it goes and
the SHA-256 of the written file at the end (clipstore checks that hash when it loads the bundled weights:
update MINI_WEIGHTS_SHA256 in clipstore/encoders/identity.py when you ship new weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from clipstore.encoders.identity import file_sha256
from clipstore.world.pretrain import PretrainConfig, pretrain


def main() -> None:
    defaults = PretrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="clipstore/weights/clipstore-mini.safetensors")
    for field in dataclasses.fields(PretrainConfig):
        if field.type in ("int", "float"):
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=eval(field.type), default=getattr(defaults, field.name))
    args = parser.parse_args()
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainConfig) if hasattr(args, f.name)}
    config = dataclasses.replace(defaults, **overrides)
    summary = pretrain(args.out, config, log=lambda line: print(line, flush=True, file=sys.stdout))
    print(f"done in {summary['seconds'] / 60:.1f} min; wrote {args.out}; sha256 {file_sha256(args.out)}")


if __name__ == "__main__":
    main()
