"""Pretraining clipstore-mini from scratch on render-world pairs with the CLIP (InfoNCE) objective.

`pretrain()` renders a fixed training set from the world's "train" split (several prompts per image), trains
the `clipstore-mini` open_clip architecture with a symmetric InfoNCE loss, AdamW, linear warm-up and cosine
decay, and writes the weights as float16 safetensors. `scripts/train_clipstore_mini.py` is the command line.

Two recipes:
- world v1 (`V1_CONFIG`, the weights tagged `world-v1`): the v1 renderer, full descriptions only, one positive
  per row; on CPU, seeded, so the same config, torch version and thread count reproduce the same weights.
- world v2 (`PretrainConfig()`, one phase; the weights tagged `world-v2` come from a chain of phases,
  `scripts/world_v2_recipe.sh`): world-v1's weights trained further on scenes
  drawn by `clipstore.world.variety.render_varied` (rendered in parallel worker processes) and, besides full
  descriptions, short prompts that state only some attributes ("two red stars"). Such a prompt is true of
  every image in the batch that has the attributes it states, so the loss takes all of those as positives (a
  multi-positive InfoNCE) instead of pushing them away; half of each batch is groups of one colour, and an
  image-image loss pulls images of one shape together. Runs on a GPU when one is there (bf16 autocast);
  `time_budget_s` fits the number of steps to the time available after a short probe of the step time.
  With `anchor` set (a teacher, e.g. world-v1), each step also draws a small batch of world-v1 renders and pulls
  the student's image-text similarities on it towards the teacher's (`anchor_loss`, a distillation that keeps
  what the teacher knew about its own world, held-out combinations included, while the rest is learned).
  With `anchor_group_by` (e.g. "shape,colour") the anchor batch is made of groups of look-alikes that share those
  attributes, so what is distilled is how the teacher tells them apart by the rest of the scene (position,
  size, style...), which is what world-v1's dense held-out test sets ask.
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
from clipstore.world.grammar import ATTRIBUTES, Scene, describe, describe_partial, sample_scene, sample_simple_scene
from clipstore.training.loop import warmup_cosine
from clipstore.world.samples import generate, sample_rng

WORLDS = ("v1", "v2")


@dataclass(frozen=True)
class PretrainConfig:
    """Hyper-parameters of a clipstore-mini pretraining run (defaults: the world-v2 recipe, which starts from the
    world-v1 weights; `V1_CONFIG`: world v1's, from scratch)."""

    world: str = "v2"
    steps: int = 1000
    batch_size: int = 256
    train_pairs: int = 80_000
    paraphrases: int = 4
    partial_prompts: int = 2  # of the paraphrases, how many are short partial prompts (v2)
    render_sizes: tuple[int, ...] = (64, 96, 128, 160)
    lr: float = 5e-4
    warmup_steps: int = 80
    weight_decay: float = 0.1
    seed: int = 0
    eval_every: int = 100
    eval_pairs: int = 1000
    threads: int = 2
    workers: int = 2  # processes rendering the training set (v2)
    time_budget_s: float = 0.0  # > 0: fewer steps if the probed step time says `steps` would not fit (v2)
    checkpoint_every: int = 0  # > 0: write the weights every this many steps too (v2)
    colour_groups: int = 16  # v2: this many groups of `group_size` samples that agree on `group_by` in each batch (hard negatives)
    group_size: int = 8
    group_by: str = "colour"  # v2: the attributes (comma-separated, from `grammar.ATTRIBUTES`) a hard-negative group shares
    shape_weight: float = 0.3  # v2: weight of the image-image loss that pulls images of one shape together
    simple_share: float = 0.25  # v2: share of scenes drawn as simple drawings (`grammar.sample_simple_scene`)
    v1_share: float = 0.3  # v2: share of images drawn by the world-v1 renderer unchanged (`variety.render_varied`)
    init: str = "clipstore-mini:world-v1"  # start from these weights (a model spec); "" starts from random ones
    start_step: int = 0  # > 0: resume a run at this step of its schedule (`init`: that run's checkpoint)
    anchor: str = ""  # v2: a teacher model spec (e.g. "clipstore-mini:world-v1"); "" turns the anchor loss off
    anchor_weight: float = 1.0  # v2: weight of the anchor loss (student vs teacher similarities on v1 renders)
    anchor_batch: int = 64  # v2: world-v1 pairs in each step's anchor batch
    anchor_pool: int = 4000  # v2: world-v1 pairs rendered for the anchor batches (teacher embeddings precomputed)
    anchor_group_by: str = ""  # v2: "" draws the anchor batch at random; attributes (e.g. "shape,colour") make it
    # groups of `anchor_group_size` look-alikes that share them, so the teacher's fine distinctions are distilled
    anchor_group_size: int = 8


V1_CONFIG = PretrainConfig(
    world="v1", steps=1500, batch_size=256, train_pairs=40_000, paraphrases=3, partial_prompts=0, lr=1e-3,
    warmup_steps=100, eval_every=250, workers=1, colour_groups=0, shape_weight=0.0, simple_share=0.0, init="",
)
"""The recipe of the world-v1 weights (CPU, 2 threads)."""


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


def scene_codes(scene: Scene) -> list[int]:
    """The scene's attributes as integers, in `ATTRIBUTES` order (a 31-bit hash of each `name=value`): two scenes
    agree on an attribute exactly when its codes are equal."""
    import zlib

    return [zlib.crc32(f"{name}={getattr(scene, name)}".encode()) & 0x7FFFFFFF for name in ATTRIBUTES]


def render_chunk(task: tuple[int, int, int, str, tuple[int, ...], int, int, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Samples start..start+n-1 of a v2 training set: images (uint8, (n, 3, S, S), preprocessed but not
    normalised), tokenised prompts ((n, paraphrases, context) int32: full descriptions, then `partial` short
    ones), the scenes' attribute codes (n, A) and which attributes each prompt states ((n, paraphrases, A)).
    A `simple` share of the scenes are simple drawings (`grammar.sample_simple_scene`), the rest `sample_scene`'s;
    a `v1_share` of the images are drawn by the world-v1 renderer unchanged (`variety.render_varied`).
    `task` is (start, n, seed, split, sizes, paraphrases, partial, simple, v1_share).

    A module-level function so worker processes can run it."""
    import open_clip
    import torchvision.transforms.functional as TF
    from PIL import Image

    from clipstore.world.variety import render_varied

    start, n, seed, split, sizes, paraphrases, partial, simple, v1_share = task
    identity = resolve_model(f"{MINI_ARCHITECTURE}:{RANDOM_WEIGHTS}")
    tokenizer = open_clip.get_tokenizer(MINI_ARCHITECTURE)
    side = identity.image_size
    images = np.empty((n, 3, side, side), np.uint8)
    prompts, codes = [], np.empty((n, len(ATTRIBUTES)), np.int64)
    stated = np.zeros((n, paraphrases, len(ATTRIBUTES)), bool)
    for row, index in enumerate(range(start, start + n)):
        rng = sample_rng(seed, split, index)
        scene = sample_simple_scene(rng, split) if rng.random() < simple else sample_scene(rng, split)
        image = render_varied(scene, sizes[index % len(sizes)], rng, v1_share)
        image = image.resize((side, side), Image.Resampling.BICUBIC) if image.size != (side, side) else image
        images[row] = np.asarray(TF.pil_to_tensor(image))
        texts = []
        for k in range(paraphrases):
            if k < paraphrases - partial:
                texts.append(describe(scene, rng))
                stated[row, k] = True
            else:
                text, names = describe_partial(scene, rng)
                texts.append(text)
                stated[row, k] = [name in names for name in ATTRIBUTES]
        prompts.extend(texts)
        codes[row] = scene_codes(scene)
    tokens = tokenizer(prompts).view(n, paraphrases, -1).numpy().astype(np.int32)
    return images, tokens, codes, stated


def _render_v2(config: PretrainConfig, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import multiprocessing

    chunk = 2000
    tasks = [(start, min(chunk, n - start), seed, "train", config.render_sizes, config.paraphrases, config.partial_prompts, config.simple_share,
              config.v1_share)
             for start in range(0, n, chunk)]
    if config.workers > 1:
        with multiprocessing.get_context("spawn").Pool(config.workers) as pool:
            parts = pool.map(render_chunk, tasks, chunksize=1)
    else:
        parts = [render_chunk(task) for task in tasks]
    return tuple(np.concatenate([part[k] for part in parts]) for k in range(4))  # type: ignore[return-value]


def pretrain(
    out: str | Path,
    config: PretrainConfig = PretrainConfig(),
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Train clipstore-mini (from scratch, or from `config.init`'s weights) and save float16 safetensors to `out`.
    Returns a summary dict."""
    import open_clip
    import torch
    import torch.nn.functional as F

    if config.world not in WORLDS:
        raise ValueError(f"world must be one of {WORLDS}, not {config.world!r}")
    group_attributes(config.group_by)  # a typo fails here, not after rendering
    if config.anchor_group_by:
        group_attributes(config.anchor_group_by)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    identity = resolve_model(f"{MINI_ARCHITECTURE}:{RANDOM_WEIGHTS}")
    transform = open_clip.image_transform(
        identity.image_size, is_train=False, mean=identity.mean, std=identity.std,
        resize_mode=identity.resize_mode, interpolation=identity.interpolation,
    )
    tokenizer = open_clip.get_tokenizer(MINI_ARCHITECTURE)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    started = time.perf_counter()
    if config.world == "v1":
        images, prompts = render_pairs(config.train_pairs, config.seed, "train", config.render_sizes, config.paraphrases, transform)
        tokens = tokenizer([text for texts in prompts for text in texts]).view(config.train_pairs, config.paraphrases, -1)
        codes = stated = None
    else:
        pixels, token_array, scene_code, stated_np = _render_v2(config, config.train_pairs, config.seed)
        tokens = torch.from_numpy(token_array).long().to(device)
        mean = torch.tensor(identity.mean).view(1, 3, 1, 1)
        std = torch.tensor(identity.std).view(1, 3, 1, 1)
        images = torch.from_numpy(pixels).to(device)
        codes = torch.from_numpy(scene_code).to(device)
        stated = torch.from_numpy(stated_np).to(device)
        mean, std = mean.to(device), std.to(device)
    val_images, val_prompts = render_pairs(config.eval_pairs, config.seed + 1, "train", (128,), 1, transform)
    val_tokens = tokenizer([texts[0] for texts in val_prompts])
    log(f"rendered {config.train_pairs} training pairs in {time.perf_counter() - started:.0f}s on {device}")
    anchor = None
    if config.anchor:
        if config.world != "v2":
            raise ValueError("anchor is a world v2 option")
        anchor = _anchor_targets(config, transform, tokenizer, device)
        log(f"anchor: {config.anchor_pool} world-v1 pairs embedded by {config.anchor}")

    def batch_images(index):
        if config.world == "v1":
            return images[index].float()
        return (images[index].float() / 255 - mean) / std

    def new_model():
        torch.manual_seed(config.seed)
        if config.init:
            from clipstore.encoders.clip import create_model

            model = create_model(resolve_model(config.init)).float().to(device)
        else:
            model = open_clip.create_model(MINI_ARCHITECTURE, pretrained=None).to(device)
        decay, no_decay = [], []
        for name, parameter in model.named_parameters():
            (no_decay if parameter.ndim < 2 or "embedding" in name or "logit_scale" in name else decay).append(parameter)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, betas=(0.9, 0.98), eps=1e-6,
        )
        return model, optimizer

    generator = torch.Generator().manual_seed(config.seed + config.start_step)  # a resumed run draws new batches
    if codes is not None:  # the v2 batches' hard negatives: groups that share `group_by` (by default one colour,
        # so shape has to tell them apart)
        members_of = hard_negative_groups(codes.cpu(), config.group_by)

    def batch_index():
        if codes is None or config.colour_groups <= 0:
            return torch.randint(0, config.train_pairs, (config.batch_size,), generator=generator)
        groups = []
        for choice in torch.randint(0, len(members_of), (config.colour_groups,), generator=generator).tolist():
            members = members_of[choice]
            groups.append(members[torch.randint(0, len(members), (config.group_size,), generator=generator)])
        rest = config.batch_size - config.colour_groups * config.group_size
        return torch.cat([*groups, torch.randint(0, config.train_pairs, (max(rest, 0),), generator=generator)])

    def step_loss(model):
        index = batch_index().to(device)
        choice = torch.randint(0, config.paraphrases, (len(index),), generator=generator).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            image_features = F.normalize(model.encode_image(batch_images(index)).float(), dim=-1)
            text_features = F.normalize(model.encode_text(tokens[index, choice]).float(), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        if codes is None:
            target = torch.arange(len(index), device=device)
            return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        loss = multi_positive_loss(logits, positive_pairs(codes[index], stated[index, choice]))
        if config.shape_weight > 0:  # images of one shape, whatever else differs, are pulled together
            loss = loss + config.shape_weight * same_label_loss(image_features, codes[index][:, ATTRIBUTES.index("shape")])
        if anchor is not None:
            pool_images, pool_tokens, teacher_images, teacher_texts, teacher_scale, pool_groups = anchor
            pick = anchor_index(pool_groups, len(pool_images), config.anchor_batch, config.anchor_group_size, generator).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                student_images = F.normalize(model.encode_image(pool_images[pick].float()).float(), dim=-1)
                student_texts = F.normalize(model.encode_text(pool_tokens[pick]).float(), dim=-1)
            student_logits = model.logit_scale.exp() * student_images @ student_texts.T
            teacher_logits = teacher_scale * teacher_images[pick] @ teacher_texts[pick].T
            loss = loss + config.anchor_weight * anchor_loss(student_logits, teacher_logits)
        return loss

    steps = config.steps
    if config.time_budget_s > 0:  # probe the step time on a throwaway model, then fit the steps to the budget
        model, optimizer = new_model()
        for probe in range(25):
            if probe == 5:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                probe_started = time.perf_counter()
            loss = step_loss(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_step = (time.perf_counter() - probe_started) / 20
        left = config.time_budget_s - (time.perf_counter() - started)
        steps = max(config.start_step + config.warmup_steps + 1, min(config.steps, config.start_step + int(left * 0.92 / per_step)))
        log(f"probe: {per_step * 1000:.1f} ms per step; {left:.0f}s left; training {steps} steps")

    if not 0 <= config.start_step < steps:
        raise ValueError(f"start_step must be in [0, {steps}), not {config.start_step}")
    model, optimizer = new_model()
    lr_at = warmup_cosine(steps, config.warmup_steps)
    # A resumed run continues the schedule where its checkpoint left it (AdamW's moments start again from zero:
    # a short re-warm-up of `warmup_steps` keeps their first steps small).
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: _resumed_lr(lr_at, k, config.start_step, config.warmup_steps))
    history = []
    for step in range(config.start_step + 1, steps + 1):
        model.train()
        loss = step_loss(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 25 == 0 or step == 1:
            history.append((step, float(loss.detach())))
            if step % 250 == 0 or step == 1 or config.world == "v1":
                log(f"step {step}/{steps} loss {float(loss.detach()):.3f} lr {schedule.get_last_lr()[0]:.2e} "
                    f"elapsed {time.perf_counter() - started:.0f}s")
        if step % config.eval_every == 0 or step == steps:
            scores = evaluate(model, val_images, val_tokens)
            log(f"step {step} validation R@1 image->text {scores.image_to_text[1]:.3f} "
                f"text->image R@10 {scores.text_to_image[10]:.3f}")
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < steps:
            save_weights(model, out, config, steps_run=step)
    save_weights(model, out, config, steps_run=steps)
    return {"seconds": time.perf_counter() - started, "loss": history, "config": asdict(config), "steps_run": steps}


def _anchor_targets(config: PretrainConfig, transform, tokenizer, device):
    """The anchor pool: `anchor_pool` world-v1 pairs (preprocessed images, tokens of one prompt each), the
    teacher's normalised embeddings of them and logit scale, computed once, and the pool's look-alike groups
    (`hard_negative_groups` by `anchor_group_by`; None when the anchor batch is drawn at random)."""
    import torch
    import torch.nn.functional as F

    from clipstore.encoders.clip import create_model

    seed = config.seed + 2
    images, prompts = render_pairs(config.anchor_pool, seed, "train", config.render_sizes, 1, transform)
    groups = None
    if config.anchor_group_by:
        codes = torch.tensor([scene_codes(sample_scene(sample_rng(seed, "train", index), "train")) for index in range(config.anchor_pool)])
        groups = [members for members in hard_negative_groups(codes, config.anchor_group_by) if len(members) > 1]
    tokens = tokenizer([texts[0] for texts in prompts]).to(device)
    images = images.to(device)
    teacher = create_model(resolve_model(config.anchor)).float().to(device).eval()
    image_chunks, text_chunks = [], []
    with torch.inference_mode():
        for start in range(0, len(images), 500):
            image_chunks.append(F.normalize(teacher.encode_image(images[start : start + 500].float()).float(), dim=-1))
            text_chunks.append(F.normalize(teacher.encode_text(tokens[start : start + 500]).float(), dim=-1))
        scale = float(teacher.logit_scale.exp())
    return images, tokens, torch.cat(image_chunks).clone(), torch.cat(text_chunks).clone(), scale, groups


def anchor_index(groups, pool_size: int, batch: int, group_size: int, generator):
    """Rows of the anchor pool for one step: `batch` at random when `groups` is None, else whole groups of
    `group_size` look-alikes (drawn with replacement within a group of fewer), topped up at random."""
    import torch

    if not groups:
        return torch.randint(0, pool_size, (batch,), generator=generator)
    picked = []
    for choice in torch.randint(0, len(groups), (batch // group_size,), generator=generator).tolist():
        members = groups[choice]
        if len(members) >= group_size:
            picked.append(members[torch.randperm(len(members), generator=generator)[:group_size]])
        else:
            picked.append(members[torch.randint(0, len(members), (group_size,), generator=generator)])
    rest = batch - group_size * (batch // group_size)
    return torch.cat([*picked, torch.randint(0, pool_size, (rest,), generator=generator)])


def anchor_loss(student_logits, teacher_logits):
    """Distillation of image-text similarities: the KL divergence from the teacher's softmax to the student's,
    over each row (image->text) and each column (text->image), averaged. Zero when the two agree."""
    import torch.nn.functional as F

    rows = F.kl_div(F.log_softmax(student_logits, dim=1), F.log_softmax(teacher_logits, dim=1), log_target=True, reduction="batchmean")
    columns = F.kl_div(F.log_softmax(student_logits.T, dim=1), F.log_softmax(teacher_logits.T, dim=1), log_target=True, reduction="batchmean")
    return (rows + columns) / 2


def group_attributes(group_by: str) -> list[int]:
    """The columns of `scene_codes` named by `group_by` ("colour", "shape,colour", ...)."""
    names = [name.strip() for name in group_by.split(",") if name.strip()]
    unknown = [name for name in names if name not in ATTRIBUTES]
    if not names or unknown:
        raise ValueError(f"group_by names attributes from {ATTRIBUTES}, comma-separated; not {group_by!r}")
    return [ATTRIBUTES.index(name) for name in names]


def hard_negative_groups(codes, group_by: str) -> list:
    """The rows of `codes` (N, A) that agree on the attributes `group_by` names, one index tensor per group."""
    import torch

    _, group_of = torch.unique(codes[:, group_attributes(group_by)], dim=0, return_inverse=True)
    return [torch.nonzero(group_of == value).flatten() for value in torch.unique(group_of)]


def _resumed_lr(lr_at: Callable[[int], float], k: int, start_step: int, warmup_steps: int) -> float:
    """The learning-rate factor `k` steps into a run that starts at `start_step` of the schedule `lr_at`."""
    if start_step == 0:
        return lr_at(k)
    return lr_at(start_step + k) * min(1.0, (k + 1) / max(1, warmup_steps))


def positive_pairs(codes, stated):
    """positives[i, j]: image i shows every attribute that prompt j states (a float tensor, 1 on the diagonal).

    `codes` (B, A): the attributes of the scene behind row i (image i and prompt i describe the same scene);
    `stated` (B, A) bool: which attributes prompt i states."""
    same = codes[:, None, :] == codes[None, :, :]  # [i, j, a]: scene i and scene j agree on attribute a
    return (same | ~stated[None, :, :]).all(dim=-1).float()


def multi_positive_loss(logits, positives):
    """Symmetric InfoNCE where each row's target spreads evenly over its positives (CLIP's loss when the
    positives are the identity)."""
    import torch.nn.functional as F

    image_to_text = -(positives / positives.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    text_to_image = -(positives / positives.sum(0, keepdim=True) * F.log_softmax(logits, dim=0)).sum(0).mean()
    return (image_to_text + text_to_image) / 2


def same_label_loss(features, labels, temperature: float = 0.1):
    """Supervised contrastive loss among images: each image's positives are the other images with its label
    (mean log-probability of them among all other images); images whose label is alone in the batch add nothing."""
    import torch
    import torch.nn.functional as F

    similarity = features @ features.T / temperature
    eye = torch.eye(len(labels), dtype=torch.bool, device=features.device)
    similarity = similarity.masked_fill(eye, float("-inf"))
    positives = (labels[:, None] == labels[None, :]) & ~eye
    log_probability = F.log_softmax(similarity, dim=1).masked_fill(eye, 0.0)
    counts = positives.sum(1)
    has = counts > 0
    if not bool(has.any()):
        return features.sum() * 0.0
    per_image = (log_probability * positives).sum(1)[has] / counts[has]
    return -per_image.mean()


def save_weights(model, out: str | Path, config: PretrainConfig, steps_run: int) -> None:
    """The model's weights as float16 safetensors (written to a temporary file, then renamed)."""
    import torch
    from safetensors.torch import save_file

    state = {name: tensor.detach().cpu().to(torch.float16).contiguous() for name, tensor in model.state_dict().items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"architecture": MINI_ARCHITECTURE, "config": repr(asdict(config)), "steps_run": str(steps_run)}
    partial = out.with_name(out.name + ".partial")
    save_file(state, str(partial), metadata=metadata)
    partial.replace(out)


def evaluate(model, images, tokens, batch_size: int = 500) -> RetrievalScores:
    """Retrieval scores of a model on preprocessed images and tokenised prompts (row i of each is a pair)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    image_chunks, text_chunks = [], []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            image_chunks.append(F.normalize(model.encode_image(images[start : start + batch_size].float().to(device)).float(), dim=-1))
            text_chunks.append(F.normalize(model.encode_text(tokens[start : start + batch_size].to(device)).float(), dim=-1))
    return retrieval_scores(torch.cat(image_chunks).cpu().numpy(), torch.cat(text_chunks).cpu().numpy())
