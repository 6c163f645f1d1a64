"""Pretraining clipstore-mini from scratch on render-world pairs with the CLIP (InfoNCE) objective, on CPU.

`pretrain()` renders a fixed training set from the world's "train" split (several paraphrases per image),
trains the `clipstore-mini` open_clip architecture with a symmetric InfoNCE loss, AdamW, linear warm-up and
cosine decay, and writes the weights as float16 safetensors. Everything is seeded, so the same config, torch
version and thread count reproduce the same weights. `scripts/train_clipstore_mini.py` is the command line.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clipstore.encoders.identity import MINI_ARCHITECTURE, RANDOM_WEIGHTS, resolve_model
from clipstore.world.grammar import describe, sample_scene
from clipstore.training.loop import warmup_cosine
from clipstore.world.samples import generate, sample_rng


@dataclass(frozen=True)
class PretrainConfig:
    """Hyper-parameters of a clipstore-mini pretraining run (defaults reproduce the shipped weights)."""

    steps: int = 1500
    batch_size: int = 256
    train_pairs: int = 40_000
    paraphrases: int = 3
    render_sizes: tuple[int, ...] = (64, 96, 128, 160)
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    eval_every: int = 250
    eval_pairs: int = 1000
    threads: int = 2


@dataclass(frozen=True)
class RetrievalScores:
    """Recall@k among n pairs, both directions (image->text: for each image, is its own prompt in the top k)."""

    n: int
    image_to_text: dict[int, float]
    text_to_image: dict[int, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def render_pairs(n: int, seed: int, split: str, sizes: tuple[int, ...], paraphrases: int, transform) -> tuple[Any, list[list[str]]]:
    """n rendered images (preprocessed, float16 tensor (n, 3, H, W)) and `paraphrases` prompts for each."""
    import torch

    images = []
    prompts = []
    for sample in generate(n, seed=seed, split=split, size=sizes[0]) if len(sizes) == 1 else _mixed_sizes(n, seed, split, sizes):
        images.append(transform(sample.image).to(torch.float16))
        texts = [sample.prompt]
        rng = random.Random(f"paraphrase:{seed}:{split}:{sample.index}")
        scene = sample_scene(sample_rng(seed, split, sample.index), split)
        texts += [describe(scene, rng) for _ in range(paraphrases - 1)]
        prompts.append(texts)
    return torch.stack(images), prompts


def _mixed_sizes(n: int, seed: int, split: str, sizes: tuple[int, ...]):
    for index in range(n):
        size = sizes[index % len(sizes)]
        yield next(generate(1, seed=seed, split=split, size=size, start=index))


def retrieval_scores(image_vectors: np.ndarray, text_vectors: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> RetrievalScores:
    """Recall@k for matched rows of L2-normalised image and text vectors (row i of each is a pair)."""
    similarity = image_vectors @ text_vectors.T
    truth = np.diag(similarity)[:, None]
    # Rank of the true match = number of candidates scoring strictly higher.
    image_rank = (similarity > truth).sum(axis=1)
    text_rank = (similarity.T > truth).sum(axis=1)
    return RetrievalScores(
        n=len(similarity),
        image_to_text={k: float(np.mean(image_rank < k)) for k in ks},
        text_to_image={k: float(np.mean(text_rank < k)) for k in ks},
    )


def pretrain(
    out: str | Path,
    config: PretrainConfig = PretrainConfig(),
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Train clipstore-mini from scratch and save float16 safetensors to `out`. Returns a summary dict."""
    import open_clip
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    identity = resolve_model(f"{MINI_ARCHITECTURE}:{RANDOM_WEIGHTS}")
    transform = open_clip.image_transform(
        identity.image_size, is_train=False, mean=identity.mean, std=identity.std,
        resize_mode=identity.resize_mode, interpolation=identity.interpolation,
    )
    tokenizer = open_clip.get_tokenizer(MINI_ARCHITECTURE)

    started = time.perf_counter()
    images, prompts = render_pairs(config.train_pairs, config.seed, "train", config.render_sizes, config.paraphrases, transform)
    tokens = tokenizer([text for texts in prompts for text in texts]).view(config.train_pairs, config.paraphrases, -1)
    val_images, val_prompts = render_pairs(config.eval_pairs, config.seed + 1, "train", (128,), 1, transform)
    val_tokens = tokenizer([texts[0] for texts in val_prompts])
    log(f"rendered {config.train_pairs} training pairs in {time.perf_counter() - started:.0f}s")

    model = open_clip.create_model(MINI_ARCHITECTURE, pretrained=None)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 or "embedding" in name or "logit_scale" in name else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.98), eps=1e-6,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.steps, config.warmup_steps))
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    for step in range(1, config.steps + 1):
        model.train()
        index = torch.randint(0, config.train_pairs, (config.batch_size,), generator=generator)
        choice = torch.randint(0, config.paraphrases, (config.batch_size,), generator=generator)
        image_features = F.normalize(model.encode_image(images[index].float()), dim=-1)
        text_features = F.normalize(model.encode_text(tokens[index, choice]), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        target = torch.arange(config.batch_size)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 25 == 0 or step == 1:
            history.append((step, float(loss.detach())))
            log(f"step {step}/{config.steps} loss {float(loss.detach()):.3f} lr {schedule.get_last_lr()[0]:.2e} "
                f"elapsed {time.perf_counter() - started:.0f}s")
        if step % config.eval_every == 0 or step == config.steps:
            scores = evaluate(model, val_images, val_tokens)
            log(f"step {step} validation R@1 image->text {scores.image_to_text[1]:.3f} "
                f"text->image R@10 {scores.text_to_image[10]:.3f}")

    state = {name: tensor.detach().to(torch.float16).contiguous() for name, tensor in model.state_dict().items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"architecture": MINI_ARCHITECTURE, "config": repr(asdict(config))})
    return {"seconds": time.perf_counter() - started, "loss": history, "config": asdict(config)}


def evaluate(model, images, tokens, batch_size: int = 500) -> RetrievalScores:
    """Retrieval scores of a model on preprocessed images and tokenised prompts (row i of each is a pair)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    image_chunks, text_chunks = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            image_chunks.append(F.normalize(model.encode_image(images[start : start + batch_size].float()), dim=-1))
            text_chunks.append(F.normalize(model.encode_text(tokens[start : start + batch_size]), dim=-1))
    return retrieval_scores(torch.cat(image_chunks).numpy(), torch.cat(text_chunks).numpy())
