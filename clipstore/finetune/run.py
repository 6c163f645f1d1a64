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
(the image's fixed split, `clipstore.pairs.split_of`) with early stopping on image->image mAP when labels
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
from typing import TYPE_CHECKING, Any

import numpy as np

from clipstore.db import tables
from clipstore.errors import InvalidOptionError, TrainingDataError
from clipstore.encoders.identity import ModelIdentity, file_sha256
from clipstore.results import _AsDict
from clipstore.progress import Progress, silent
from clipstore.training.images import load_training_image
from clipstore.training.runs import run_key, saved_folder
from clipstore.db import layout

if TYPE_CHECKING:
    from clipstore.switch.reembed import ReembedReport
    from clipstore.db.context import StoreContext

METHODS = ("mcip", "2sft")


@dataclass(frozen=True)
class FinetuneOptions(_AsDict):
    """Hyper-parameters of `clipstore finetune` (the CLI's defaults)."""

    method: str = "mcip"
    epochs: int = 10
    batch_size: int = 64
    lr_backbone: float = 1e-5
    lr_head: float = 1e-4
    lr_text: float = 1e-5
    realign_epochs: int = 5
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    patience: int = 3
    captions: int = 5
    caption_threshold: float | None = None
    margin: float = 0.2
    scale: float = 30.0
    lambda_captions: float = 0.5
    lambda_labels: float = 0.5
    labels_from_folders: bool = False
    label_manifest: str | None = None
    label_field: str = "label"
    augment: bool = True
    max_centres: int = 16384
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidOptionError(f"method must be one of {METHODS}, not {self.method!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise InvalidOptionError("epochs must be at least 1 and batch_size at least 2")


@dataclass(frozen=True)
class FinetuneEpoch(_AsDict):
    stage: str
    epoch: int
    train_loss: float
    validation_score: float


@dataclass(frozen=True)
class FinetuneReport(_AsDict):
    """What `clipstore finetune` did: the saved model (id, folder, spec to open it with), the data used,
    the validation scores before and after, and (with `apply`) the switch of the store to it."""

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
    history: tuple[FinetuneEpoch, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = field(default_factory=tuple)
    switch: "ReembedReport | None" = None


# --- data ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSet:
    """The store's images for fine-tuning: ids, a readable path each, own prompts (or None), labels (or None),
    stored embeddings (n, d) and splits."""

    ids: tuple[str, ...]
    paths: tuple[str, ...]
    prompts: tuple[str | None, ...]
    labels: tuple[str | None, ...]
    embeddings: np.ndarray
    splits: tuple[str, ...]

    def rows(self, split: str) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)


def load_images(store: "StoreContext", options: FinetuneOptions) -> ImageSet:
    """Every stored image with a readable file, its own prompt, its label (if asked for) and split."""
    from clipstore.describe.pairs import readable_path, split_for

    images = tables.open_images(store.db)
    columns = ["id", "embedding"] + (["prompt"] if "prompt" in images.schema.names else [])
    data = tables.read_columns(images, columns)
    paths = tables.paths_by_image(store.db)
    manifest_labels = _manifest_labels(options.label_manifest, options.label_field) if options.label_manifest else {}
    ids = data.column("id").to_pylist()
    prompts = data.column("prompt").to_pylist() if "prompt" in columns else [None] * len(ids)
    vectors = tables.vector_matrix(data.column("embedding"))
    keep, out_paths, out_labels = [], [], []
    for row in np.argsort(np.array(ids, dtype=object), kind="stable"):
        candidates = paths.get(ids[row], [])
        path = readable_path(candidates)
        if path is None:
            continue
        label = None
        if manifest_labels:
            label = next((manifest_labels[p] for p in candidates if p in manifest_labels), None)
        elif options.labels_from_folders:
            label = os.path.basename(os.path.dirname(path)) or None
        keep.append(int(row))
        out_paths.append(path)
        out_labels.append(label)
    return ImageSet(
        tuple(ids[i] for i in keep),
        tuple(out_paths),
        tuple((prompts[i] or "").strip() or None for i in keep),
        tuple(out_labels),
        vectors[keep] if keep else np.zeros((0, vectors.shape[1] if len(vectors) else store.model.embed_dim), np.float32),
        tuple(split_for(ids[i], prompts[i]) for i in keep),
    )


def _manifest_labels(path: str, field_name: str) -> dict[str, str]:
    """{absolute image path: label} from a CSV/TSV/JSONL manifest; `field_name` may be dotted (labels.shape)."""
    from clipstore.ingest.run import read_manifest_records

    base, records = read_manifest_records(path, "label manifest")
    labels = {}
    for record in records:
        value: Any = record
        for part in field_name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(record, dict) and isinstance(record.get("path"), str) and value not in (None, ""):
            labels[os.path.normpath(os.path.join(base, os.path.expanduser(record["path"])))] = str(value)
    if not labels:
        raise TrainingDataError(f"No labels found in {path}: it needs `path` and `{field_name}` fields.")
    return labels


@dataclass(frozen=True)
class Captions:
    """Pseudo-captions: the caption texts, their (locked) CLIP text embeddings (c, d), and per image the
    indices of its captions, padded with -1 (n, m_max)."""

    texts: tuple[str, ...]
    embeddings: np.ndarray
    positives: np.ndarray


def pseudo_captions(store: "StoreContext", images: ImageSet, count: int, threshold: float | None) -> Captions:
    """Each image's own prompt (if any) plus its top-`count` bank prompts by CLIP similarity (>= threshold)."""
    from clipstore.describe.model_b import bank_view

    # The held-out images' own prompts are not offered as pseudo-captions of other images.
    bank = bank_view(store, [p for p, s in zip(images.prompts, images.splits) if p and s != "train"])
    visible = ~bank.hidden
    texts: list[str] = []
    index: dict[str, int] = {}
    vectors: list[np.ndarray] = []

    def add(text: str, vector: np.ndarray) -> int:
        if text not in index:
            index[text] = len(texts)
            texts.append(text)
            vectors.append(vector)
        return index[text]

    own = [p for p in images.prompts if p]
    own_vectors = store.encoder.encode_texts(own) if own else np.zeros((0, store.model.embed_dim), np.float32)
    own_lookup = dict(zip(own, own_vectors))
    per_image: list[list[int]] = []
    scores = images.embeddings @ bank.clip.T if len(bank.ids) and count > 0 else np.zeros((len(images.ids), 0))
    if scores.shape[1]:
        scores[:, ~visible] = -np.inf
    for row in range(len(images.ids)):
        chosen = []
        if images.prompts[row]:
            chosen.append(add(images.prompts[row], own_lookup[images.prompts[row]]))
        if scores.shape[1]:
            top = np.argsort(-scores[row], kind="stable")[:count]
            for j in top:
                if np.isfinite(scores[row, j]) and (threshold is None or scores[row, j] >= threshold):
                    slot = add(bank.texts[j], bank.clip[j])
                    if slot not in chosen:
                        chosen.append(slot)
        per_image.append(chosen)
    width = max((len(c) for c in per_image), default=0)
    positives = np.full((len(per_image), max(width, 1)), -1, np.int64)
    for row, chosen in enumerate(per_image):
        positives[row, : len(chosen)] = chosen
    embeddings = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, store.model.embed_dim), np.float32)
    return Captions(tuple(texts), embeddings, positives)


# --- losses -------------------------------------------------------------------------------------------------


def arc_margin_logits(cosines, targets, scale: float, margin: float):
    """ArcFace logits: scale * cos(theta), with cos(theta + margin) for each row's target column."""
    import torch

    cos_t = cosines.gather(1, targets[:, None]).clamp(-1 + 1e-7, 1 - 1e-7)
    theta = torch.acos(cos_t)
    # Past pi - margin, cos(theta + margin) would rise again: use the CosFace-style fallback there.
    with_margin = torch.where(theta + margin < math.pi, torch.cos(theta + margin), cos_t - margin * math.sin(margin))
    logits = cosines.scatter(1, targets[:, None], with_margin)
    return scale * logits


def arc_margin_loss(embeddings, centres, targets, scale: float, margin: float):
    """ArcMargin (ArcFace) loss of unit embeddings (B, d) against unit class centres (C, d)."""
    import torch.nn.functional as F

    cosines = F.normalize(embeddings, dim=-1) @ F.normalize(centres, dim=-1).T
    return F.cross_entropy(arc_margin_logits(cosines, targets, scale, margin), targets)


def mc_arc_margin_loss(embeddings, centres, positives, scale: float, margin: float):
    """Multi-caption ArcMargin: for every (image, one of its captions) the ArcMargin loss with that caption as
    the target, the image's other captions left out of the softmax; averaged over all such pairs.

    embeddings (B, d); centres (C, d) caption text embeddings (locked); positives (B, P) caption indices into
    centres, -1 for padding. None when no image of the batch has a caption.
    """
    import torch
    import torch.nn.functional as F

    cosines = F.normalize(embeddings, dim=-1) @ F.normalize(centres, dim=-1).T
    valid = positives >= 0
    is_positive = torch.zeros_like(cosines, dtype=torch.bool)
    rows = torch.arange(len(positives))[:, None].expand_as(positives)
    is_positive[rows[valid], positives[valid]] = True
    losses = []
    for slot in range(positives.shape[1]):
        use = valid[:, slot]
        if not use.any():
            continue
        targets = positives[use, slot]
        logits = arc_margin_logits(cosines[use], targets, scale, margin)
        others = is_positive[use].clone()
        others[torch.arange(len(targets)), targets] = False
        logits = logits.masked_fill(others, float("-inf"))
        losses.append(F.cross_entropy(logits, targets, reduction="none"))
    return torch.cat(losses).mean() if losses else None


def info_nce_loss(image_embeddings, text_embeddings, logit_scale: float):
    """Symmetric InfoNCE (CLIP's loss) for matching rows of unit image and text embeddings."""
    import torch
    import torch.nn.functional as F

    logits = logit_scale * F.normalize(image_embeddings, dim=-1) @ F.normalize(text_embeddings, dim=-1).T
    targets = torch.arange(len(logits))
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


# --- validation metrics -------------------------------------------------------------------------------------


def map_at_k(embeddings: np.ndarray, labels: list, k: int = 10) -> tuple[float, float]:
    """Image->image mAP@k and R@1 (a same-label image ranks first), each image a query against the others."""
    labels_array = np.array(labels, dtype=object)
    scores = embeddings @ embeddings.T
    np.fill_diagonal(scores, -np.inf)
    k = min(k, len(labels) - 1)
    if k <= 0:
        return float("nan"), float("nan")
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    relevant = labels_array[top] == labels_array[:, None]
    counts = np.array([(labels_array == label).sum() - 1 for label in labels_array])
    precision = np.cumsum(relevant, axis=1) / np.arange(1, k + 1)
    ap = (precision * relevant).sum(axis=1) / np.maximum(np.minimum(counts, k), 1)
    has = counts > 0
    return float(ap[has].mean()) if has.any() else float("nan"), float(relevant[has, 0].mean()) if has.any() else float("nan")


def caption_recall(embeddings: np.ndarray, caption_embeddings: np.ndarray, positives: np.ndarray) -> float:
    """Fraction of images whose most similar caption (among all captions) is one of their own."""
    if not len(embeddings) or not len(caption_embeddings):
        return float("nan")
    best = np.argmax(embeddings @ caption_embeddings.T, axis=1)
    return float(np.mean([best[i] in set(positives[i][positives[i] >= 0]) for i in range(len(best))]))


# --- the run ------------------------------------------------------------------------------------------------


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
    model = create_model(identity).float()
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
            centre_rows, batch_positives = _caption_subset(positives_all[rows], len(captions.texts), options.max_centres, rng)
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
    groups = [{"params": backbone, "lr": options.lr_backbone}, {"params": head, "lr": options.lr_head}]
    if centres is not None:
        groups.append({"params": [centres], "lr": options.lr_head * 10, "weight_decay": 0.0})

    key = _run_key(store, options, images)
    work = os.path.join(store.path, layout.MODELS_FOLDER, f".training-{key}")
    os.makedirs(work, exist_ok=True)
    steps = math.ceil(len(train_rows) / options.batch_size)
    holder = _Holder(visual, centres)
    loop = TrainingLoop(holder, options, steps, os.path.join(work, "stage1.pt"), groups)
    loop.resume()

    def train_epoch(epoch: int) -> float:
        rng = np.random.default_rng(options.seed * 7919 + epoch)
        py_rng = random.Random(options.seed * 7919 + epoch)
        order = train_rows[rng.permutation(len(train_rows))]
        losses = []
        for step, start in enumerate(range(0, len(order), options.batch_size)):
            rows = order[start : start + options.batch_size]
            if len(rows) < 2:
                continue
            loss = batch_loss(rows, encode_rows(rows, True, py_rng), rng)
            if loss is None:  # nothing in this batch to learn from (no captions, no labels)
                continue
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

    created = tables.utc_now()
    model_id = created.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    folder = _save_model(store, model, model_id, {
        "id": model_id,
        "parent": identity.portable(store.path).to_dict(),  # the store may move: see ModelIdentity.portable
        "method": options.method,
        "options": options.to_dict(),
        "text_encoder_changed": text_changed,
        "validation": {"metric": metric, "before": before, "after": after},
        "history": [h.to_dict() for h in history],
        "created_at": created.isoformat(),
    })
    shutil.rmtree(work, ignore_errors=True)
    counts = (captions.positives >= 0).sum(axis=1)
    return FinetuneReport(
        model_id,
        folder,
        f"{identity.architecture}:{os.path.join(folder, 'model.safetensors')}",
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
        tuple(history),
        tuple(notes),
    )


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


def _caption_subset(positives, total: int, limit: int, rng: np.random.Generator):
    """Centre rows for one batch: all captions when there are few, else the batch's positives plus random
    others up to `limit`; returns (centre indices, positives re-indexed into them)."""
    import torch

    if total <= limit:
        return torch.arange(total), positives
    used = torch.unique(positives[positives >= 0])
    extra = rng.choice(total, size=min(limit, total), replace=False)
    rows = torch.unique(torch.cat([used, torch.from_numpy(extra)]))
    remap = torch.full((total,), -1, dtype=torch.long)
    remap[rows] = torch.arange(len(rows))
    mapped = torch.where(positives >= 0, remap[positives.clamp(min=0)], positives)
    return rows, mapped


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


def _save_model(store: "StoreContext", model, model_id: str, config: dict[str, Any]) -> str:
    from safetensors.torch import save_file

    final = os.path.join(store.path, layout.MODELS_FOLDER, model_id)
    with saved_folder(final) as folder:
        state = {name: tensor.detach().float().contiguous().cpu() for name, tensor in model.state_dict().items()}
        save_file(state, os.path.join(folder, layout.MODEL_WEIGHTS_FILE))
        config["model_sha256"] = file_sha256(os.path.join(folder, layout.MODEL_WEIGHTS_FILE))
        with open(os.path.join(folder, layout.CONFIG_FILE), "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
    return final


def finetuned_models(store_path: str, relinked: dict[str, str] | None = None) -> list[dict]:
    """The fine-tuned models saved in a store (their config.json contents plus `folder`), newest first; the
    `parent` identity is located in the store (`ModelIdentity.located`, with the store's relinks)."""
    root = os.path.join(store_path, layout.MODELS_FOLDER)
    found = []
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            config = os.path.join(root, name, layout.CONFIG_FILE)
            if not name.startswith(".") and not name.endswith(".partial") and os.path.isfile(config):
                with open(config, encoding="utf-8") as handle:
                    data = json.load(handle)
                data["folder"] = os.path.join(root, name)
                data["parent"] = ModelIdentity.from_dict(data["parent"]).located(store_path, relinked).to_dict()
                found.append(data)
    found.sort(key=lambda data: data.get("created_at", ""), reverse=True)
    return found


def finetuned_identity(parent: ModelIdentity, checkpoint: str) -> ModelIdentity:
    """The identity of a fine-tuned checkpoint: the parent's architecture and preprocessing, new weights."""
    path = os.path.abspath(checkpoint)
    return replace(parent, pretrained=None, checkpoint_path=path, checkpoint_sha256=file_sha256(path))


def _run_key(store: "StoreContext", options: FinetuneOptions, images: ImageSet) -> str:
    # A changed label set must not resume old margin centres: the labels are part of the key.
    return run_key(store.model, store.path, options.to_dict(), ["\n".join(images.ids), json.dumps(images.labels)])
