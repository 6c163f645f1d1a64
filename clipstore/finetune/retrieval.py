"""`clipstore eval --retrieval`: how well one embedding per image serves both searches (seed 003's benchmarks).

For each encoder compared (the store's current model, and e.g. a fine-tuned one), on the held-out test split of
the store's labelled images (labels from folders or a manifest, as for `clipstore finetune`):

- image->image mAP@k and R@1 (`metrics.map_at_k`): every image queries the others; same-label images are relevant;
- text->image R@1 / R@10: every image's own prompt queries the held-out images; its image is the answer;
- zero-shot classification accuracy: the label names rendered as text prompts (`template`, default
  "a photo of a {label}"), nearest label text wins;
- k-NN classification accuracy: the majority label of the k nearest *training-split* images.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from clipstore.errors import InvalidOptionError, TrainingDataError
from clipstore.finetune.metrics import map_at_k
from clipstore.results import _AsDict
from clipstore.progress import silent

if TYPE_CHECKING:
    from clipstore.encoders.clip import ClipEncoder
    from clipstore.finetune.data import ImageSet
    from clipstore.db.context import StoreContext

DEFAULT_TEMPLATE = "a photo of a {label}"


@dataclass(frozen=True)
class RetrievalRow(_AsDict):
    """One encoder's scores (fractions in [0, 1]; NaN where the data does not allow a score)."""

    model: str
    image_map: float
    image_r1: float
    text_r1: float
    text_r10: float
    zero_shot_accuracy: float
    knn_accuracy: float


@dataclass(frozen=True)
class RetrievalReport(_AsDict):
    rows: tuple[RetrievalRow, ...]
    k: int
    images: int
    queries_with_prompts: int
    classes: int
    template: str
    notes: tuple[str, ...] = field(default_factory=tuple)


def text_to_image(image_embeddings: np.ndarray, text_embeddings: np.ndarray, answers: np.ndarray) -> tuple[float, float]:
    """R@1 and R@10 of text queries whose correct image is `answers[i]`."""
    if not len(text_embeddings):
        return float("nan"), float("nan")
    scores = text_embeddings @ image_embeddings.T
    rank = (scores > scores[np.arange(len(answers)), answers][:, None]).sum(axis=1)
    return float(np.mean(rank < 1)), float(np.mean(rank < 10))


def zero_shot_accuracy(image_embeddings: np.ndarray, labels: Sequence[str], label_embeddings: np.ndarray, names: Sequence[str]) -> float:
    predicted = np.argmax(image_embeddings @ label_embeddings.T, axis=1)
    return float(np.mean([names[p] == label for p, label in zip(predicted, labels)]))


def knn_accuracy(query: np.ndarray, query_labels: Sequence[str], gallery: np.ndarray, gallery_labels: Sequence[str], k: int) -> float:
    """Majority vote of the k nearest gallery images (ties: the nearest of the tied labels)."""
    if not len(gallery):
        return float("nan")
    k = min(k, len(gallery))
    top = np.argsort(-(query @ gallery.T), axis=1, kind="stable")[:, :k]
    correct = 0
    for row, neighbours in enumerate(top):
        votes = Counter(gallery_labels[j] for j in neighbours)
        best = max(votes.values())
        winner = next(gallery_labels[j] for j in neighbours if votes[gallery_labels[j]] == best)
        correct += winner == query_labels[row]
    return float(correct / len(top))


def check_template(template: str) -> None:
    """Raise InvalidOptionError unless `template` is a zero-shot prompt template holding `{label}` and no
    other braces (e.g. "a photo of a {label}")."""
    try:
        varies = template.format(label="a") != template.format(label="b")
    except (KeyError, IndexError, ValueError) as exc:
        problem = f"it cannot be filled in ({exc})"
    else:
        if varies:
            return
        problem = "it has no {label}"
    raise InvalidOptionError(
        f"The zero-shot template {template!r} is not usable: {problem}. Write the class label as {{label}} and "
        'double any other brace, e.g. --template "a photo of a {label}".'
    )


def evaluate_retrieval(
    store: "StoreContext",
    encoders: Sequence[tuple[str, "ClipEncoder"]],
    images: "ImageSet",
    *,
    k: int = 10,
    template: str = DEFAULT_TEMPLATE,
    splits: Sequence[str] = ("test",),
    progress: Callable[[str, int, int], None] | None = None,
) -> RetrievalReport:
    """Score each (name, encoder) on the held-out labelled images of `images` (the `splits`, by default the
    test split; never "train", which is the k-NN gallery); see the module docstring."""
    from clipstore.training.images import load_training_image

    if "train" in splits:
        raise InvalidOptionError("the train split is the k-NN gallery and what fine-tuning learns from: evaluate on held-out splits")
    check_template(template)
    test = [int(r) for split in splits for r in images.rows(split) if images.labels[r] is not None]
    train = [int(r) for r in images.rows("train") if images.labels[r] is not None]
    if len({images.labels[r] for r in test}) < 2:
        raise TrainingDataError(
            "Retrieval evaluation needs labelled held-out images of at least 2 classes (labels from "
            "--labels-from-folders or --label-manifest; about 10% of the images are held out)."
        )
    report = progress or silent
    rows = test + train
    decoded = []
    max_side = int(max(encoder.identity.image_size for _, encoder in encoders) * 1.3)  # every model's input, no more
    for done, r in enumerate(rows, start=1):
        decoded.append(load_training_image(images.paths[r], min_side=store.model.decode_min_side, max_side=max_side))
        report("load", done, len(rows))
    keep = [i for i, image in enumerate(decoded) if image is not None]
    rows = [rows[i] for i in keep]
    decoded = [decoded[i] for i in keep]
    test_rows = set(test)
    n_test = sum(1 for r in rows if r in test_rows)
    labels = [images.labels[r] for r in rows]
    names = sorted({label for label in labels})
    prompted = [i for i in range(n_test) if images.prompts[rows[i]]]
    results = []
    for step, (name, encoder) in enumerate(encoders, start=1):
        vectors = encoder.encode_images(decoded)
        test_vectors, train_vectors = vectors[:n_test], vectors[n_test:]
        mean_ap, r1 = map_at_k(np.asarray(test_vectors, np.float32), labels[:n_test], k)  # same label = relevant
        text_vectors = encoder.encode_texts([images.prompts[rows[i]] for i in prompted]) if prompted else np.zeros((0, vectors.shape[1]))
        t1, t10 = text_to_image(test_vectors, text_vectors, np.array(prompted, dtype=np.int64))
        label_texts = [template.format(label=label) for label in names]
        label_vectors = encoder.encode_texts(label_texts)
        zero_shot = zero_shot_accuracy(test_vectors, labels[:n_test], label_vectors, names)
        knn = knn_accuracy(test_vectors, labels[:n_test], train_vectors, labels[n_test:], k)
        results.append(RetrievalRow(name, *(round(x, 6) for x in (mean_ap, r1, t1, t10, zero_shot, knn))))
        report("evaluate", step, len(encoders))
    return RetrievalReport(tuple(results), k, n_test, len(prompted), len(names), template)

