"""From a loaded open_clip model to the numpy towers of `clipstore.encoders.towers`, checked before use.

`export_text_tower` / `export_vision_tower` read an open_clip model's modules (not its config) and return the
tower's `spec` and float32 weights, or raise `Unrepresentable` when any part of the tower is something the numpy
towers do not compute: an HF text tower, CoCa, custom attention blocks, attention pooling, a non-CLIP tokenizer
or tokenizer options, non-square inputs... Then, as the last word, `verified_text_tower` / `verified_vision_tower`
embed a few probe texts and images both ways and refuse the tower unless the tokens are identical and every
embedding agrees at cosine >= MIN_AGREEMENT with the model's own float32 output. So a tower that is cached always
computes what the model computes; a model it cannot represent keeps using the full encoder.

Called by `clipstore.encoders.tower_cache.remember_towers` when `ClipEncoder` has loaded a model anyway (torch and
open_clip are imported then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from clipstore.encoders.identity import ModelIdentity
from clipstore.encoders.towers import INTERPOLATIONS, RESIZE_MODES, TextTower, VisionTower

if TYPE_CHECKING:
    import torch

MIN_AGREEMENT = 0.99999
"""Least cosine between a numpy tower's embedding and open_clip's float32 one on every probe."""

PROBE_TEXTS = (
    "a photo of a dog",
    "",
    "A RED circle, two small blue squares & a striped background (4k!)",
    "Ünïcödé ＦＵＬＬ width 日本語 🚀 &amp; html",
    " ".join(["a very long prompt that the context length has to cut"] * 12),
)


class Unrepresentable(Exception):
    """The model's tower is not one the numpy towers compute (the message says what differs)."""


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise Unrepresentable(what)


def _require_float32(model: Any) -> None:
    import torch

    _require(all(p.dtype == torch.float32 for p in model.parameters()), "the model is not in float32")


def _array(tensor: "torch.Tensor") -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to("cpu").float().numpy())


def _norm(module: Any, width: int, name: str, arrays: dict[str, np.ndarray]) -> float:
    """A LayerNorm's weight and bias into `arrays`; returns its eps."""
    import torch

    _require(isinstance(module, torch.nn.LayerNorm), f"{name} is {type(module).__name__}, not a LayerNorm")
    _require(tuple(module.normalized_shape) == (width,), f"{name} normalises {tuple(module.normalized_shape)}")
    _require(module.weight is not None and module.bias is not None, f"{name} has no affine weight or bias")
    arrays[f"{name}.weight"] = _array(module.weight)
    arrays[f"{name}.bias"] = _array(module.bias)
    return float(module.eps)


def _linear(module: Any, name: str, arrays: dict[str, np.ndarray]) -> None:
    import torch

    from torch.nn.modules.linear import NonDynamicallyQuantizableLinear  # MultiheadAttention's out_proj

    plain = type(module) in (torch.nn.Linear, NonDynamicallyQuantizableLinear)
    _require(plain and module.bias is not None, f"{name} is not a Linear with bias")
    arrays[f"{name}.weight"] = _array(module.weight)
    arrays[f"{name}.bias"] = _array(module.bias)


def _activation(module: Any) -> str:
    import torch
    from open_clip.transformer import QuickGELU

    if type(module) is QuickGELU:
        return "quick_gelu"
    _require(type(module) is torch.nn.GELU, f"activation {type(module).__name__} is not GELU or QuickGELU")
    return "gelu_tanh" if module.approximate == "tanh" else "gelu"


def _scale(module: Any, name: str, arrays: dict[str, np.ndarray]) -> bool:
    """A residual branch's layer scale: False for none, True (with its gamma in `arrays`) for LayerScale."""
    import torch
    from open_clip.transformer import LayerScale

    if type(module) is torch.nn.Identity:
        return False
    _require(type(module) is LayerScale, f"{name} is {type(module).__name__}")
    arrays[f"{name}.gamma"] = _array(module.gamma)
    return True


def _export_transformer(transformer: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """An open_clip `Transformer` of default `ResidualAttentionBlock`s: its spec keys, weights into `arrays`."""
    import torch
    from open_clip.transformer import ResidualAttentionBlock, Transformer

    _require(type(transformer) is Transformer, f"the transformer is {type(transformer).__name__}")
    _require(transformer.batch_first, "the transformer is not batch-first")
    width, blocks = transformer.width, list(transformer.resblocks)
    _require(len(blocks) > 0, "the transformer has no blocks")
    heads = blocks[0].attn.num_heads
    activations, scales, eps = set(), set(), set()
    for index, block in enumerate(blocks):
        prefix = f"blocks.{index}."
        _require(type(block) is ResidualAttentionBlock, f"block {index} is {type(block).__name__}")
        _require(not hasattr(block, "ln_1_kv"), f"block {index} has cross-attention")
        attention = block.attn
        _require(type(attention) is torch.nn.MultiheadAttention, f"block {index} attention is {type(attention).__name__}")
        _require(
            attention._qkv_same_embed_dim and attention.batch_first and attention.in_proj_bias is not None
            and attention.bias_k is None and attention.bias_v is None and not attention.add_zero_attn
            and attention.embed_dim == width and attention.num_heads == heads,
            f"block {index} attention is not plain multi-head self-attention with biases",
        )
        arrays[prefix + "attn.in_proj.weight"] = _array(attention.in_proj_weight)
        arrays[prefix + "attn.in_proj.bias"] = _array(attention.in_proj_bias)
        _linear(attention.out_proj, prefix + "attn.out_proj", arrays)
        eps.add(_norm(block.ln_1, width, prefix + "ln_1", arrays))
        eps.add(_norm(block.ln_2, width, prefix + "ln_2", arrays))
        mlp = block.mlp
        _require(type(mlp) is torch.nn.Sequential and list(mlp._modules) == ["c_fc", "gelu", "c_proj"], f"block {index} MLP differs")
        _linear(mlp.c_fc, prefix + "mlp.c_fc", arrays)
        _linear(mlp.c_proj, prefix + "mlp.c_proj", arrays)
        activations.add(_activation(mlp.gelu))
        scales.add(_scale(block.ls_1, prefix + "ls_1", arrays))
        scales.add(_scale(block.ls_2, prefix + "ls_2", arrays))
    _require(len(activations) == 1 and len(scales) == 1 and len(eps) == 1, "the blocks differ from each other")
    return {
        "width": width,
        "heads": heads,
        "layers": len(blocks),
        "activation": activations.pop(),
        "layer_scale": scales.pop(),
        "eps": eps.pop(),
    }


def _text_parts(model: Any) -> dict[str, Any]:
    """The text tower's modules of a CLIP or CustomTextCLIP model (other model classes are refused)."""
    from open_clip.model import CLIP, CustomTextCLIP
    from open_clip.transformer import TextTransformer

    if type(model) is CLIP:
        return {
            "transformer": model.transformer, "token_embedding": model.token_embedding,
            "positional_embedding": model.positional_embedding, "ln_final": model.ln_final,
            "text_projection": model.text_projection, "pool": model.text_pool_type,
            "eos_id": getattr(model, "text_eos_id", None), "attn_mask": model.attn_mask,
        }
    _require(type(model) is CustomTextCLIP, f"the model is {type(model).__name__}, not CLIP")
    text = model.text
    _require(type(text) is TextTransformer, f"the text tower is {type(text).__name__} (e.g. a Hugging Face model)")
    _require(text.cls_emb is None and not text.use_pad_mask and not text.output_tokens, "the text tower has a class token, pad mask or token output")
    return {
        "transformer": text.transformer, "token_embedding": text.token_embedding,
        "positional_embedding": text.positional_embedding, "ln_final": text.ln_final,
        "text_projection": text.text_projection, "pool": text.pool_type, "eos_id": text.eos_id,
        "attn_mask": text.attn_mask,
    }


def tokenizer_spec(tokenizer: Any) -> dict[str, Any]:
    """{"context_length", "clean"} of an open_clip tokenizer that `ClipTokenizer` reproduces; Unrepresentable
    for any other (Hugging Face, SigLIP, extra special tokens, a reduction mask...)."""
    from open_clip import tokenizer as open_clip_tokenizer

    _require(type(tokenizer) is open_clip_tokenizer.SimpleTokenizer, f"the tokenizer is {type(tokenizer).__name__}")
    _require(tokenizer.reduction_fn is None, "the tokenizer reduces long texts instead of truncating them")
    _require(len(tokenizer.encoder) == 49408, "the tokenizer has extra special tokens")
    cleans = {
        open_clip_tokenizer._clean_lower: "lower",
        open_clip_tokenizer._clean_whitespace: "whitespace",
        open_clip_tokenizer._clean_canonicalize: "canonicalize",
    }
    _require(tokenizer.clean_fn in cleans, "the tokenizer cleans text in its own way")
    return {"context_length": int(tokenizer.context_length), "clean": cleans[tokenizer.clean_fn]}


def export_text_tower(model: Any, identity: ModelIdentity, tokenizer: Callable[[], Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(spec, weights) of `model`'s text tower for `towers.TextTower`. `tokenizer()` makes the model's open_clip
    tokenizer; it is called last, once the tower is one the numpy code computes and the model's config names no
    other tokenizer than CLIP's (making a Hugging Face tokenizer may download it). Raises Unrepresentable."""
    import open_clip
    import torch

    _require_float32(model)
    parts = _text_parts(model)
    arrays: dict[str, np.ndarray] = {}
    spec = _export_transformer(parts["transformer"], arrays)
    width = spec["width"]
    context = parts["positional_embedding"].shape[0]
    _require(tuple(parts["positional_embedding"].shape) == (context, width), "positional embedding shape")
    mask = parts["attn_mask"]
    causal = torch.full((context, context), float("-inf")).triu_(1)
    _require(mask is not None and tuple(mask.shape) == (context, context) and torch.equal(mask.float(), causal), "the text attention is not causal")
    pool = parts["pool"]
    _require(pool in ("argmax", "eos", "first", "last"), f"text pooling {pool!r}")
    _require(type(parts["token_embedding"]) is torch.nn.Embedding, "the token embedding is not an Embedding")
    _require(_norm(parts["ln_final"], width, "ln_final", arrays) == spec["eps"], "ln_final's eps differs")
    projection = parts["text_projection"]
    if projection is None:
        spec["projection"] = "none"
        _require(width == identity.embed_dim, "no projection, but the width is not the embedding size")
    elif type(projection) is torch.nn.Linear:
        spec["projection"] = "linear"
        _linear(projection, "text_projection", arrays)
    else:
        _require(isinstance(projection, torch.nn.Parameter) and tuple(projection.shape) == (width, identity.embed_dim), "text projection")
        spec["projection"] = "matrix"
        arrays["text_projection"] = _array(projection)
    text_config = (open_clip.get_model_config(identity.architecture) or {}).get("text_cfg", {})
    other = text_config.get("hf_tokenizer_name") or "siglip" in identity.architecture.lower()
    _require(not other, "the model's tokenizer is not CLIP's")
    tokens = tokenizer_spec(tokenizer())
    _require(tokens["context_length"] == context, "the tokenizer's context length is not the model's")
    spec.update(kind="text", embed_dim=identity.embed_dim, tokenizer=tokens, context_length=context, pool=pool, eos_id=parts["eos_id"])
    arrays["token_embedding"] = _array(parts["token_embedding"].weight)
    arrays["positional_embedding"] = _array(parts["positional_embedding"])
    return spec, arrays


def export_vision_tower(model: Any, identity: ModelIdentity) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(spec, weights) of `model`'s ViT image tower and `identity`'s preprocessing for `towers.VisionTower`.
    Raises Unrepresentable."""
    import torch
    from open_clip.transformer import PatchDropout, VisionTransformer

    _require_float32(model)
    visual = getattr(model, "visual", None)
    _require(type(visual) is VisionTransformer, f"the image tower is {type(visual).__name__}, not open_clip's ViT")
    _require(visual.attn_pool is None and not visual.output_tokens, "the image tower has attention pooling or token output")
    _require(visual.pool_type in ("tok", "avg"), f"image pooling {visual.pool_type!r}")
    _require(type(visual.patch_dropout) in (torch.nn.Identity, PatchDropout), "patch dropout")
    conv = visual.conv1
    patch = conv.kernel_size[0]
    _require(
        type(conv) is torch.nn.Conv2d and conv.bias is None and conv.in_channels == 3 and conv.groups == 1
        and tuple(conv.kernel_size) == (patch, patch) and tuple(conv.stride) == (patch, patch)
        and tuple(conv.padding) == (0, 0) and tuple(conv.dilation) == (1, 1),
        "the patch embedding is not a plain stride-p convolution",
    )
    height, width_px = visual.image_size
    _require(height == width_px == identity.image_size, "the image input is not square or not the identity's size")
    _require(identity.resize_mode in RESIZE_MODES and identity.interpolation in INTERPOLATIONS, "image preprocessing")
    arrays: dict[str, np.ndarray] = {}
    spec = _export_transformer(visual.transformer, arrays)
    width = spec["width"]
    spec.update(
        kind="vision", embed_dim=identity.embed_dim, patch_size=patch, image_size=height,
        pool=visual.pool_type, final_ln_after_pool=bool(visual.final_ln_after_pool),
        ln_pre=type(visual.ln_pre) is not torch.nn.Identity, projection=visual.proj is not None,
        preprocess={
            "image_size": identity.image_size, "mean": list(identity.mean), "std": list(identity.std),
            "interpolation": identity.interpolation, "resize_mode": identity.resize_mode,
        },
    )
    patches = (height // patch) ** 2
    _require(tuple(visual.positional_embedding.shape) == (patches + 1, width), "positional embedding shape")
    arrays["conv1.weight"] = _array(conv.weight)
    arrays["class_embedding"] = _array(visual.class_embedding)
    arrays["positional_embedding"] = _array(visual.positional_embedding)
    if spec["ln_pre"]:
        _require(_norm(visual.ln_pre, width, "ln_pre", arrays) == spec["eps"], "ln_pre's eps differs")
    _require(_norm(visual.ln_post, width, "ln_post", arrays) == spec["eps"], "ln_post's eps differs")
    if spec["projection"]:
        _require(tuple(visual.proj.shape) == (width, identity.embed_dim), "image projection shape")
        arrays["proj"] = _array(visual.proj)
    else:
        _require(width == identity.embed_dim, "no projection, but the width is not the embedding size")
    return spec, arrays


def _agreement(ours: np.ndarray, theirs: "torch.Tensor") -> float:
    reference = theirs.detach().float().cpu().numpy()
    reference /= np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    return float(np.min(np.sum(ours * reference, axis=1)))


def verified_text_tower(model: Any, identity: ModelIdentity, tokenizer: Callable[[], Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """`export_text_tower`, then the probe check: clipstore's `ClipTokenizer` must tokenize PROBE_TEXTS exactly
    as `tokenizer()` (the model's open_clip tokenizer), and the numpy tower must agree with `model.encode_text`
    (float32) at MIN_AGREEMENT. The spec records the SHA-256 of the vocabulary file checked. Raises
    Unrepresentable."""
    import hashlib
    from functools import lru_cache

    import torch

    from clipstore.encoders.tokenizer import ClipTokenizer, vocab_path

    tokenizer = lru_cache(maxsize=1)(tokenizer)  # made once, if at all
    spec, arrays = export_text_tower(model, identity, tokenizer)
    path = vocab_path()
    with open(path, "rb") as handle:
        spec["tokenizer"]["vocab_sha256"] = hashlib.sha256(handle.read()).hexdigest()
    ours = ClipTokenizer(spec["tokenizer"]["context_length"], clean=spec["tokenizer"]["clean"], path=path)
    tokens = tokenizer()(list(PROBE_TEXTS))
    _require(np.array_equal(ours(list(PROBE_TEXTS)), tokens.numpy()), "clipstore's tokenizer gives other tokens than open_clip's")
    tower = TextTower(spec, arrays, lambda ids: arrays["token_embedding"][list(ids)], ours)
    with torch.inference_mode():
        theirs = model.encode_text(tokens)
    agreement = _agreement(tower.encode_texts(PROBE_TEXTS), theirs)
    _require(agreement >= MIN_AGREEMENT, f"the numpy text tower agrees with open_clip only at cosine {agreement:.6f}")
    return spec, arrays


def probe_images() -> list:
    """A few seeded noise images of several sizes and aspect ratios (landscape, portrait, small, not RGB)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for width, height in ((301, 173), (90, 160), (37, 41)):
        base = rng.integers(0, 256, size=(height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
        images.append(Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR))
    images.append(images[0].convert("L"))
    return images


def verified_vision_tower(model: Any, identity: ModelIdentity, preprocess: Callable[[Any], "torch.Tensor"]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """`export_vision_tower`, then the probe check: the numpy preprocessing must match `preprocess` (the model's
    open_clip transform) and the embeddings `model.encode_image` (float32) at MIN_AGREEMENT. Raises
    Unrepresentable."""
    import torch

    spec, arrays = export_vision_tower(model, identity)
    tower = VisionTower(spec, arrays)
    images = probe_images()
    pixels = torch.stack([preprocess(image) for image in images])
    ours = np.stack([tower.preprocess(image) for image in images])
    _require(ours.shape == tuple(pixels.shape) and np.allclose(ours, pixels.numpy(), atol=1e-4), "the numpy image preprocessing differs from open_clip's")
    with torch.inference_mode():
        theirs = model.encode_image(pixels)
    agreement = _agreement(tower.encode_images(images), theirs)
    _require(agreement >= MIN_AGREEMENT, f"the numpy image tower agrees with open_clip only at cosine {agreement:.6f}")
    return spec, arrays
