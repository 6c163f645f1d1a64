#!/bin/bash
# The chain of training phases that made clipstore-mini:world-v2, in order (BENCHMARKS.md, "clipstore-mini
# retrieval quality", has each phase's figures). Each phase starts from the previous one's weights.
# Usage: bash scripts/world_v2_recipe.sh OUT_DIR   (about 6 hours on 2 CPU cores; far less on a GPU)
# Phases that were interrupted and resumed (`--init ... --start-step N`) when the weights were made draw their
# remaining batches anew, so a rerun gives other bytes (the whole chain has not been rerun end to end).
set -euo pipefail
out=${1:?usage: world_v2_recipe.sh OUT_DIR}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
train() { python "$here/train_clipstore_mini.py" "$@"; }
anchor=(--anchor clipstore-mini:world-v1)
grouped=(--anchor-batch 128 --anchor-group-by shape,colour --anchor-group-size 8 --partial-prompts 2 --simple-share 0.3)

# run F: 3,000 steps from world-v1's weights with the world-v1 anchor from step 1
train --out "$out/runF.safetensors" --seed 4 --steps 3000 --lr 3e-4 --warmup-steps 80 --simple-share 0.3 \
  "${anchor[@]}" --anchor-weight 3 --anchor-batch 64
# R8: a second cosine cycle with run F's data mix and the grouped anchor
train --out "$out/R8.safetensors" --init "clipstore-mini:$out/runF.safetensors" --seed 9 --steps 800 --lr 2e-4 \
  --warmup-steps 80 --train-pairs 80000 --v1-share 0.3 "${anchor[@]}" --anchor-weight 3 --anchor-pool 8000 "${grouped[@]}"
# R9, R10, R11: short low-lr phases, each with a stronger anchor and more world-v1 renders
train --out "$out/R9.safetensors" --init "clipstore-mini:$out/R8.safetensors" --seed 10 --steps 400 --lr 1e-4 \
  --warmup-steps 40 --train-pairs 40000 --v1-share 0.5 "${anchor[@]}" --anchor-weight 5 --anchor-pool 16000 "${grouped[@]}"
train --out "$out/R10.safetensors" --init "clipstore-mini:$out/R9.safetensors" --seed 11 --steps 300 --lr 1e-4 \
  --warmup-steps 30 --train-pairs 40000 --v1-share 0.6 "${anchor[@]}" --anchor-weight 8 --anchor-pool 16000 "${grouped[@]}"
train --out "$out/R11.safetensors" --init "clipstore-mini:$out/R10.safetensors" --seed 12 --steps 300 --lr 1e-4 \
  --warmup-steps 30 --train-pairs 40000 --v1-share 0.7 "${anchor[@]}" --anchor-weight 12 --anchor-pool 16000 "${grouped[@]}"
# world-v2: the uniform average of R10's and R11's weights (float16, like the bundled file)
python - "$out/R10.safetensors" "$out/R11.safetensors" "$out/world-v2.safetensors" <<'PY'
import hashlib, sys
from safetensors import safe_open
from safetensors.torch import save_file
first, second, out = sys.argv[1:]
with safe_open(first, "pt") as a, safe_open(second, "pt") as b:
    weights = {key: ((a.get_tensor(key).float() + b.get_tensor(key).float()) / 2).half() for key in a.keys()}
    metadata = dict(b.metadata())
save_file(weights, out, metadata={**metadata, "averaged": f"{first} {second}"})
print(f"wrote {out}; sha256 {hashlib.sha256(open(out, 'rb').read()).hexdigest()}")
PY
echo "use it: --model clipstore-mini:$out/world-v2.safetensors"
