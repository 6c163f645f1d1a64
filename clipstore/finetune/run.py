"""`clipstore finetune`: one image embedding that serves image->image and text->image (seed 003).

**MCIP** (default, `method="mcip"`). Every stored image gets pseudo-captions: its own prompt when it carries
one, plus the top-m prompts of the bank by CLIP image->text similarity (above `caption_threshold` when set).
The image encoder is fine-tuned with the multi-caption ArcMargin loss: the pseudo-captions' embeddings from the
*locked* text encoder are the class centres, and each image is pulled towards every one of its captions by
an additive angular margin, against all other captions. When images carry class labels (`labels_from_folders`
or a manifest field) the ArcMargin loss on those labels is added: `lambda_captions * MCArcMargin +
lambda_labels * ArcMargin` (0.5 / 0.5). The text encoder never changes, so the prompt bank's CLIP text
embeddings stay valid.

**2SFT** (`method="2sft"`). Stage 1: ArcMargin on the labels for the image encoder. Stage 2: InfoNCE
re-alignment of the text encoder to the new image embeddings (image encoder locked), on the images' own
prompts (else their top pseudo-caption). The text encoder changes, so the bank must be re-embedded.

Both use differential learning rates (`lr_backbone` for the pretrained transformer, `lr_head` for the
projection and the margin centres), AdamW with warm-up and cosine decay, image augmentation, a validation split
(the image's fixed split, `clipstore.describe.pairs.split_for`) with early stopping on image->image mAP when labels
exist (else caption recall), a checkpoint every epoch (an interrupted run resumes), and a progress callback.
The result is saved in the store under `models/<id>/` (`model.safetensors`: the whole open_clip model;
`config.json`: the parent model's identity, the method and every hyper-parameter, the validation scores).
Switching the store's vectors to it is a separate, explicit step (`clipstore reembed`).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from clipstore.db import layout, tables
from clipstore.errors import TrainingDataError
from clipstore.finetune.captions import pseudo_captions
from clipstore.finetune.data import ImageSet, load_images
from clipstore.finetune.losses import arc_margin_loss, caption_subset, info_nce_loss, mc_arc_margin_loss
from clipstore.finetune.metrics import map_at_k, validation_improved
from clipstore.finetune.options import LR_PROBE_MAX_STEPS, LR_PROBE_SCALES, FinetuneOptions
from clipstore.finetune.registry import save_model
from clipstore.paths import join
from clipstore.progress import Progress, silent
from clipstore.results import _AsDict
from clipstore.training.images import load_training_image
from clipstore.training.runs import run_key

if TYPE_CHECKING:
    from clipstore.db.context import StoreContext
    from clipstore.switch.reembed import ReembedReport


@dataclass(frozen=True)
class FinetuneEpoch(_AsDict):
    stage: str
    epoch: int
    train_loss: float
    validation_score: float


@dataclass(frozen=True)
class FinetuneReport(_AsDict):
    """What `clipstore finetune` did: the saved model (id, folder, spec to open it with), the data used,
    the validation scores before and after, whether the model beat its base on them (`improved`; when not,
    `notes` says so with what to try, and `apply` does not switch unless forced), and (with `apply`) the switch
    of the store to it."""

    model_id: str
    folder: str
    spec: str
    method: str
    images: int
    train_images: int
    validation_images: int
    labelled: int
    classes: int
    captions_per_image: float
    text_encoder_changed: bool
    validation_metric: str
    validation_before: float
    validation_after: float
    improved: bool
    history: tuple[FinetuneEpoch, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = field(default_factory=tuple)
    lr_scale: float = 1.0
    lr_probe: tuple[tuple[float, float], ...] = ()
    switch: "ReembedReport | None" = None


def finetune(store: "StoreContext", options: FinetuneOptions, progress: Progress | None = None) -> FinetuneReport:
    """Fine-tune the store's CLIP model (see the module docstring) and save it in the store."""
    import torch

    from clipstore.encoders.clip import create_model
    from clipstore.training.loop import TrainingLoop

    report = progress or silent
    notes: list[str] = []
    images = load_images(store, options)
    train_rows, val_rows = images.rows("train"), images.rows("validation")
    if len(train_rows) < 8:
        raise TrainingDataError(
            f"Fine-tuning needs at least 8 training images with readable files; this store has {len(train_rows)} "
            f"(of {len(images.ids)} readable images, about 80% are used for training). Ingest more images."
        )
    label_names = sorted({label for label in images.labels if label is not None})
    labelled = sum(label is not None for label in images.labels)
    if options.method == "2sft" and len(label_names) < 2:
        raise TrainingDataError(
            "The 2SFT method trains the image encoder on class labels, and these images have fewer than 2 "
            "classes. Give labels (--labels-from-folders, or --label-manifest FILE --label-field NAME), or use "
            "--method mcip, which learns from pseudo-captions."
        )
    captions = pseudo_captions(store, images, options.captions, options.caption_threshold)
    if options.method == "mcip" and not len(captions.texts):
        raise TrainingDataError(
            "MCIP needs pseudo-captions, but the prompt bank is empty and no image carries a prompt. Add prompts "
            "(`clipstore prompts add FILE`) first."
        )
    label_index = {label: i for i, label in enumerate(label_names)}
    label_ids = np.array([label_index.get(label, -1) if label is not None else -1 for label in images.labels], np.int64)

    identity = store.model
    torch.manual_seed(options.seed)
    model = create_model(store.loadable(identity)).float()
    model.requires_grad_(False)
    visual = model.visual
    visual.requires_grad_(True)
    centres = None
    if label_names:
        with torch.no_grad():
            init = np.stack([images.embeddings[label_ids == i].mean(axis=0) for i in range(len(label_names))])
        centres = torch.nn.Parameter(torch.from_numpy(init / np.linalg.norm(init, axis=1, keepdims=True)))

    max_side = int(identity.image_size * 1.3)
    decoded = {}
    for done, row in enumerate(np.concatenate([train_rows, val_rows]), start=1):
        decoded[int(row)] = load_training_image(images.paths[row], min_side=store.model.decode_min_side, max_side=max_side)
        report("load", done, len(train_rows) + len(val_rows))
    train_rows = np.array([r for r in train_rows if decoded[int(r)] is not None], np.int64)
    val_rows = np.array([r for r in val_rows if decoded[int(r)] is not None], np.int64)

    from clipstore.training.augment import image_augmenter

    augment = image_augmenter(identity.image_size, identity.mean, identity.std, rotation=10.0, crop_scale=(0.6, 1.0))
    preprocess = store.encoder.preprocess
    caption_centres = torch.from_numpy(captions.embeddings)
    positives_all = torch.from_numpy(captions.positives)
    labels_all = torch.from_numpy(label_ids)

    def encode_rows(rows: np.ndarray, train: bool, rng: random.Random):
        if train and options.augment:
            pixels = torch.stack([augment(decoded[int(r)], True, rng) for r in rows])
        else:
            pixels = torch.stack([preprocess(decoded[int(r)]) for r in rows])
        return visual(pixels)

    def validation_embeddings() -> np.ndarray:
        visual.eval()
        with torch.inference_mode():
            out = [encode_rows(val_rows[i : i + 128], False, random.Random(0)) for i in range(0, len(val_rows), 128)]
        vectors = torch.nn.functional.normalize(torch.cat(out), dim=-1).numpy() if out else np.zeros((0, identity.embed_dim), np.float32)
        return vectors

    val_labels = [images.labels[r] for r in val_rows]
    use_map = len({label for label in val_labels if label is not None}) >= 2 and all(label is not None for label in val_labels)
    metric = "image->image mAP@10 (validation)" if use_map else "minus the fine-tuning loss (validation)"

    def batch_loss(rows: np.ndarray, embeddings, rng: np.random.Generator):
        """lambda_captions * MCArcMargin + lambda_labels * ArcMargin (2SFT: ArcMargin alone); None if empty."""
        terms = []
        if options.method == "mcip" and len(captions.texts):
            centre_rows, batch_positives = caption_subset(positives_all[rows], len(captions.texts), options.max_centres, rng)
            term = mc_arc_margin_loss(embeddings, caption_centres[centre_rows], batch_positives, options.scale, options.margin)
            if term is not None:
                terms.append(options.lambda_captions * term)
        has_label = labels_all[rows] >= 0
        if centres is not None and bool(has_label.any()):
            weight = options.lambda_labels if options.method == "mcip" else 1.0
            terms.append(weight * arc_margin_loss(embeddings[has_label], centres, labels_all[rows][has_label], options.scale, options.margin))
        return sum(terms) if terms else None

    def validate() -> float:
        if use_map:
            return map_at_k(validation_embeddings(), val_labels)[0]
        # Without labels: minus the training loss on the validation images (no augmentation). Caption recall
        # would not do: the captions were chosen by the starting model, which scores ~1 on it from the start.
        if not len(val_rows):
            return float("nan")
        visual.eval()
        losses = []
        with torch.inference_mode():
            for start in range(0, len(val_rows), 128):
                rows = val_rows[start : start + 128]
                loss = batch_loss(rows, encode_rows(rows, False, random.Random(0)), np.random.default_rng(0))
                if loss is not None:
                    losses.append(float(loss) * len(rows))
        return -sum(losses) / len(val_rows) if losses else float("nan")

    before = validate()
    backbone = [p for name, p in visual.named_parameters() if not _is_head(name)]
    head = [p for name, p in visual.named_parameters() if _is_head(name)]

    def parameter_groups(scale: float) -> list[dict]:
        groups = [{"params": backbone, "lr": options.lr_backbone * scale}, {"params": head, "lr": options.lr_head * scale}]
        if centres is not None:
            groups.append({"params": [centres], "lr": options.lr_head * scale * 10, "weight_decay": 0.0})
        return groups

    steps = math.ceil(len(train_rows) / options.batch_size)
    holder = _Holder(visual, centres)

    def batches(epoch: int, limit: int | None = None):
        """(step, loss) of one epoch's batches, augmented; batches with nothing to learn from are skipped."""
        rng = np.random.default_rng(options.seed * 7919 + epoch)
        py_rng = random.Random(options.seed * 7919 + epoch)
        order = train_rows[rng.permutation(len(train_rows))]
        for step, start in enumerate(range(0, len(order), options.batch_size)):
            rows = order[start : start + options.batch_size]
            if limit is not None and step >= limit:
                return
            if len(rows) < 2:
                continue
            loss = batch_loss(rows, encode_rows(rows, True, py_rng), rng)
            if loss is not None:  # None: nothing in this batch to learn from (no captions, no labels)
                yield step, loss

    key = _run_key(store, options, images)
    work = store.location.work_folder(layout.MODELS_FOLDER, f".training-{key}")
    probe: tuple[tuple[float, float], ...] = ()
    scale = 1.0
    if options.lr_probe:
        probe_file = os.path.join(work, "lr_probe.json")  # an interrupted run resumes with the scale it probed
        if os.path.isfile(probe_file):
            with open(probe_file, encoding="utf-8") as handle:
                probe = tuple(tuple(pair) for pair in json.load(handle))
        else:
            probe = _probe_learning_rates(holder, parameter_groups, batches, validate, options, report)
            with open(probe_file + ".partial", "w", encoding="utf-8") as handle:
                json.dump(probe, handle)
            os.replace(probe_file + ".partial", probe_file)
        scale = _best_scale(probe)
        notes.append(
            "Learning-rate probe (" + ", ".join(f"{s:g}x: {score:.4f}" for s, score in probe) + f" on {metric}, after "
            f"up to {LR_PROBE_MAX_STEPS} steps each): trained with {scale:g}x (--lr-backbone {options.lr_backbone * scale:g}, "
            f"--lr-head {options.lr_head * scale:g}). --no-lr-probe uses the rates as given."
        )
    loop = TrainingLoop(holder, options, steps, os.path.join(work, "stage1.pt"), parameter_groups(scale))
    loop.resume()

    def train_epoch(epoch: int) -> float:
        losses = []
        for step, loss in batches(epoch):
            losses.append(loop.step(loss))
            report("finetune", epoch * steps + step + 1, options.epochs * steps)
        return float(np.mean(losses)) if losses else float("nan")

    loop.run(train_epoch, validate)
    history = [FinetuneEpoch("image encoder", h.epoch, h.train_loss, h.validation_avg_cos) for h in loop.history]
    after = max(h.validation_avg_cos for h in loop.history)
    visual.requires_grad_(False)

    text_changed = False
    if options.method == "2sft":
        history += _realign_text(store, model, images, captions, train_rows, val_rows, decoded, preprocess, options, work, report)
        text_changed = True

    improved = validation_improved(before, after)
    if not improved:
        notes.append(not_improved_note(metric, before, after, len(loop.history), options))

    created = tables.utc_now()
    model_id = created.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    folder = save_model(store, model, model_id, {
        "id": model_id,
        "parent": identity.portable(store.path).to_dict(),  # the store may move: see ModelIdentity.portable
        "method": options.method,
        "options": options.to_dict(),
        "text_encoder_changed": text_changed,
        "validation": {"metric": metric, "before": before, "after": after, "improved": improved},
        "history": [h.to_dict() for h in history],
        "created_at": created.isoformat(),
    })
    shutil.rmtree(work, ignore_errors=True)
    counts = (captions.positives >= 0).sum(axis=1)
    return FinetuneReport(
        model_id,
        folder,
        f"{identity.architecture}:{join(folder, layout.MODEL_WEIGHTS_FILE)}",
        options.method,
        len(images.ids),
        len(train_rows),
        len(val_rows),
        labelled,
        len(label_names),
        float(counts.mean()) if len(counts) else 0.0,
        text_changed,
        metric,
        round(float(before), 6),
        round(float(after), 6),
        improved,
        tuple(history),
        tuple(notes),
        scale,
        probe,
    )


def not_improved_note(metric: str, before: float, after: float, epochs: int, options: FinetuneOptions) -> str:
    """What to tell a user whose fine-tune did not beat its base on validation, and what to try."""
    if not (math.isfinite(before) and math.isfinite(after)):
        return (f"Not validated: no validation score ({metric} {before:.4f} -> {after:.4f}), so the saved model is "
                "not known to be better than the base. Add images (about 10% of them go to validation).")
    return (
        f"Validation did not improve: {metric} {before:.4f} before, {after:.4f} at best after {epochs} "
        f"epoch{'s' if epochs != 1 else ''}; the saved model is no better than the base, and `--apply` will not "
        f"switch to it without `--force`. Try other learning rates (--lr-backbone {options.lr_backbone:g} and "
        f"--lr-head {options.lr_head:g} were the base{'; the probe chose the scale noted above' if options.lr_probe else ''}), "
        "more --epochs, or more labelled images per class."
    )


def _probe_learning_rates(holder, parameter_groups, batches, validate, options: FinetuneOptions, report) -> tuple[tuple[float, float], ...]:
    """(scale, validation score) for each of LR_PROBE_SCALES: from the same start, a short run (one epoch, at
    most LR_PROBE_MAX_STEPS batches) of AdamW at the scaled rates, then the validation metric. The start is
    restored afterwards."""
    import copy

    import torch

    start = copy.deepcopy(holder.state_dict())
    results = []
    for index, scale in enumerate(LR_PROBE_SCALES):
        holder.load_state_dict(copy.deepcopy(start))
        holder.train()
        optimizer = torch.optim.AdamW(parameter_groups(scale), weight_decay=options.weight_decay)
        for step, loss in batches(10_000 + index, LR_PROBE_MAX_STEPS):  # other batches than the run's
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            report("lr probe", index * LR_PROBE_MAX_STEPS + step + 1, len(LR_PROBE_SCALES) * LR_PROBE_MAX_STEPS)
        results.append((scale, round(float(validate()), 6)))
    holder.load_state_dict(start)
    return tuple(results)


def _best_scale(probe: tuple[tuple[float, float], ...]) -> float:
    """The probed scale with the best finite validation score (the smallest on a tie); 1 when none is finite."""
    finite = [(score, -scale) for scale, score in probe if math.isfinite(score)]
    return -max(finite)[1] if finite else 1.0


class _Holder:
    """What TrainingLoop checkpoints: the vision tower and the label centres."""

    def __init__(self, visual, centres):
        self.visual = visual
        self.centres = centres

    def state_dict(self):
        state = {f"visual.{k}": v for k, v in self.visual.state_dict().items()}
        if self.centres is not None:
            state["centres"] = self.centres.detach()
        return state

    def load_state_dict(self, state):
        import torch

        self.visual.load_state_dict({k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")})
        if self.centres is not None and "centres" in state:
            with torch.no_grad():
                self.centres.copy_(state["centres"])

    def train(self):
        self.visual.train()

    def eval(self):
        self.visual.eval()


def _is_head(name: str) -> bool:
    """The vision tower's projection and final norm: newly specialised, trained at the higher rate."""
    return name in ("proj", "ln_post.weight", "ln_post.bias") or name.startswith(("head.", "proj."))


def _realign_text(store, model, images, captions, train_rows, val_rows, decoded, preprocess, options, work, report):
    """2SFT stage 2: InfoNCE on (image, caption) pairs, the new image encoder locked, the text encoder trained."""
    import open_clip
    import torch

    from clipstore.training.loop import TrainingLoop

    tokenizer = open_clip.get_tokenizer(store.model.architecture)
    text_of = [images.prompts[r] or (captions.texts[captions.positives[r][0]] if captions.positives[r][0] >= 0 else None) for r in range(len(images.ids))]
    train_pairs = np.array([r for r in train_rows if text_of[r]], np.int64)
    val_pairs = np.array([r for r in val_rows if text_of[r]], np.int64)
    if len(train_pairs) < 2:
        raise TrainingDataError("2SFT re-alignment needs images with a prompt or a pseudo-caption; add prompts to the bank.")
    with torch.inference_mode():
        model.visual.eval()
        rows = np.concatenate([train_pairs, val_pairs])
        image_vectors = {}
        for start in range(0, len(rows), 128):
            chunk = rows[start : start + 128]
            out = torch.nn.functional.normalize(model.visual(torch.stack([preprocess(decoded[int(r)]) for r in chunk])), dim=-1)
            for r, v in zip(chunk, out):
                image_vectors[int(r)] = v.clone()
    text_parameters = [p for name, p in model.named_parameters() if not name.startswith("visual.") and name != "logit_scale"]
    for p in text_parameters:
        p.requires_grad_(True)
    logit_scale = float(model.logit_scale.exp().clamp(max=100))

    def encode_text(rows):
        return model.encode_text(tokenizer([text_of[r] for r in rows]))

    def validate() -> float:
        if len(val_pairs) < 2:
            return float("nan")
        with torch.inference_mode():
            texts = torch.nn.functional.normalize(torch.cat([encode_text(val_pairs[i : i + 128]) for i in range(0, len(val_pairs), 128)]), dim=-1)
            imgs = torch.stack([image_vectors[int(r)] for r in val_pairs])
            best = (texts @ imgs.T).argmax(dim=1)
        return float((best == torch.arange(len(val_pairs))).float().mean())

    holder = _TextHolder(model, text_parameters)
    realign = replace(options, epochs=options.realign_epochs)
    steps = math.ceil(len(train_pairs) / options.batch_size)
    loop = TrainingLoop(holder, realign, steps, os.path.join(work, "stage2.pt"), [{"params": text_parameters, "lr": options.lr_text}])
    loop.resume()

    def train_epoch(epoch: int) -> float:
        rng = np.random.default_rng(options.seed * 104729 + epoch)
        order = train_pairs[rng.permutation(len(train_pairs))]
        losses = []
        for step, start in enumerate(range(0, len(order), options.batch_size)):
            rows = order[start : start + options.batch_size]
            if len(rows) < 2:
                continue
            loss = info_nce_loss(torch.stack([image_vectors[int(r)] for r in rows]), encode_text(rows), logit_scale)
            losses.append(loop.step(loss))
            report("realign text", epoch * steps + step + 1, realign.epochs * steps)
        return float(np.mean(losses)) if losses else float("nan")

    loop.run(train_epoch, validate)
    for p in text_parameters:
        p.requires_grad_(False)
    return [FinetuneEpoch("text re-alignment (text->image R@1)", h.epoch, h.train_loss, h.validation_avg_cos) for h in loop.history]


class _TextHolder:
    def __init__(self, model, parameters):
        self.model = model
        self.names = [name for name, p in model.named_parameters() if any(p is q for q in parameters)]

    def state_dict(self):
        own = dict(self.model.named_parameters())
        return {name: own[name].detach().clone() for name in self.names}

    def load_state_dict(self, state):
        import torch

        own = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value)

    def train(self):
        self.model.train()

    def eval(self):
        self.model.eval()


def _run_key(store: "StoreContext", options: FinetuneOptions, images: ImageSet) -> str:
    # A changed label set must not resume old margin centres: the labels are part of the key.
    return run_key(store.model, store.path, options.to_dict(), ["\n".join(images.ids), json.dumps(images.labels)])
