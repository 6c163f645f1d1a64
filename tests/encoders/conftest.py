"""Small open_clip architectures that vary one feature of clipstore-mini each, registered with open_clip for the
tests of the numpy towers (seeded random weights: `NAME:random`)."""

from __future__ import annotations

import copy
import json
from importlib import resources

import pytest

# name -> (changes to clipstore-mini's config, whether the text tower / vision tower is representable)
VARIANTS: dict[str, tuple[dict, bool, bool]] = {
    "cs-quickgelu": ({"quick_gelu": True}, True, True),
    "cs-tanh-eps": (
        {"text_cfg": {"act_kwargs": {"approximate": "tanh"}, "norm_kwargs": {"eps": 1e-6}},
         "vision_cfg": {"act_kwargs": {"approximate": "tanh"}, "norm_kwargs": {"eps": 1e-6}}},
        True, True,
    ),
    "cs-scaled-pooled": (
        {"text_cfg": {"ls_init_value": 0.5, "pool_type": "last", "proj_bias": True},
         "vision_cfg": {"ls_init_value": 0.5, "pool_type": "avg", "no_ln_pre": True, "final_ln_after_pool": True}},
        True, True,
    ),
    "cs-eos-canonical": ({"text_cfg": {"pool_type": "eos", "eos_id": 49407, "tokenizer_kwargs": {"clean": "canonicalize"}}}, True, True),
    "cs-custom-text": ({"custom_text": True}, True, True),
    "cs-qknorm": ({"text_cfg": {"qk_norm": True}, "vision_cfg": {"qk_norm": True}}, False, False),
    "cs-bidirectional": ({"text_cfg": {"no_causal_mask": True}, "vision_cfg": {"attentional_pool": True}}, False, False),
    "cs-reduced": ({"text_cfg": {"tokenizer_kwargs": {"reduction_mask": "simple"}}}, False, True),
    "cs-hf-tokenizer": ({"text_cfg": {"hf_tokenizer_name": "no-such-org/no-such-tokenizer"}}, False, True),
}


def _merged(base: dict, changes: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="session")
def variants(tmp_path_factory) -> dict[str, tuple[dict, bool, bool]]:
    """Registers every VARIANTS architecture with open_clip (idempotent) and returns VARIANTS."""
    import open_clip

    base = json.loads((resources.files("clipstore") / "model_configs" / "clipstore-mini.json").read_text())
    folder = tmp_path_factory.mktemp("variant-configs")
    for name, (changes, _, _) in VARIANTS.items():
        if name not in open_clip.list_models():
            path = folder / f"{name}.json"
            path.write_text(json.dumps(_merged(base, changes)))
            open_clip.add_model_config(path)
    return VARIANTS
