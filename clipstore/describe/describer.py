"""`store.describe(image)`: the prompt that best explains an image, by the seed's ensemble (001 eq. 6).

    B   = Model B: weighted KNN fusion of the bank prompts nearest the image in CLIP space (`model_b`)
    A   = Model A: the newest trained head (`clipstore train`), when there is one for the store's encoder
          (`heads.choose_head`, `model_a`)
    Ens = alpha * A + (1 - alpha) * B          (A and B L2-normalised; Ens too; `ensemble.blend`)

All three live in all-MiniLM-L6-v2's 384-d space. The readable description is the bank prompts nearest to Ens
(MiniLM cosine). Without a usable Model A, describe uses Model B alone and says so in `notes`.
With `use_images=True` Model B also fuses the prompts of the stored images nearest to the query image
(image->image CLIP distance, same eq. 4-5), averaged with the bank's fusion.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from clipstore.db import tables
from clipstore.describe.ensemble import blend
from clipstore.describe.heads import choose_head, load_head_model
from clipstore.describe.model_b import UNTUNED_MAX_BANK, UNTUNED_MIN_PAIRS, KnnChoice, KnnParams, bank_view, choose_untuned_knn, predict_for_image
from clipstore.encoders.minilm import MINILM_DIM
from clipstore.errors import ClipstoreError, InvalidOptionError, NothingToDescribeWithError
from clipstore.progress import silent
from clipstore.prompts.bank import PromptHit, prompt_id, prompts_near
from clipstore.results import FileFailure, _jsonable

if TYPE_CHECKING:
    from clipstore.db.context import StoreContext


DESCRIBE_STAGE = "describe images"
"""The progress stage of describing a folder: done/total count the image files found."""

@dataclass(frozen=True)
class Description:
    """An image's description.

    embedding: (384,) the ensemble's prediction in all-MiniLM-L6-v2 space (unit length).
    prompts: the bank prompts nearest that embedding, best first, scored by MiniLM cosine.
    alpha: the weight of Model A in eq. 6 (0 when Model B was used alone).
    parts: {"a": (384,) or None, "b": (384,) or None}, each unit length.
    method: "ensemble", "model_b" or "model_a" (which parts made the embedding).
    head: the id of the Model A head used, or None.
    knn: Model B's parameters; knn_choice: why those (`model_b.KnnChoice`: the rule, a sentence, the scores).
    notes: anything the caller should know (e.g. "no trained Model A").
    """

    embedding: np.ndarray
    prompts: tuple[PromptHit, ...]
    alpha: float
    parts: dict[str, np.ndarray | None]
    method: str
    head: str | None
    knn: KnnParams
    notes: tuple[str, ...] = field(default_factory=tuple)
    knn_choice: KnnChoice | None = None

    @property
    def text(self) -> str | None:
        """The best prompt, or None when the bank is empty."""
        return self.prompts[0].text if self.prompts else None

    def to_dict(self, *, parts: bool = False) -> dict[str, Any]:
        """JSON-ready: prompts [{text, score, id}], alpha, embedding, method, head, knn, knn_choice, notes (+ parts)."""
        data: dict[str, Any] = {
            "prompts": [{"text": hit.text, "score": round(hit.score, 6), "id": hit.id} for hit in self.prompts],
            "alpha": self.alpha,
            "embedding": [round(float(x), 6) for x in self.embedding],
            "method": self.method,
            "head": self.head,
            "knn": self.knn.to_dict(),
            "knn_choice": self.knn_choice.to_dict() if self.knn_choice else None,
            "notes": list(self.notes),
        }
        if parts:
            data["parts"] = {k: None if v is None else [round(float(x), 6) for x in v] for k, v in self.parts.items()}
        return _jsonable(data)


@dataclass(frozen=True)
class DescribedFile:
    """One image of a batch describe: its path and description."""

    path: str
    description: Description

    def to_dict(self, *, parts: bool = False) -> dict[str, Any]:
        """JSON-ready: {path, **description.to_dict()}, the record `clipstore describe FOLDER --json` prints."""
        return {"path": self.path, **self.description.to_dict(parts=parts)}


class Describer:
    """Describes images with one store's bank, head and parameters (reuse it for many images)."""

    def __init__(self, store: "StoreContext", *, head: str | os.PathLike[str] | None = None, use_images: bool = False):
        self.store = store
        self.use_images = use_images
        self.notes: list[str] = []
        self._model = None
        chosen = choose_head(store, head)
        self._config, self._folder = chosen.config, chosen.folder
        self.head_id = chosen.config.id if chosen.config else None
        stale = chosen.stale_newest
        if stale is not None:
            self.notes.append(
                f"The newest Model A head ({stale.id}) was trained on {stale.base_model.get('spec', '?')}, "
                f"not on the store's current encoder {store.model.spec}; it is stale. "
                + ("Using the newest head trained on the current encoder. " if chosen.config else "Describing with Model B alone. ")
                + "Retrain with `clipstore train`."
            )
        elif chosen.config is None:
            self.notes.append("No trained Model A in this store: describing with Model B alone (train one with `clipstore train`).")
        self._bank_size = tables.open_prompts(store.db).count_rows() if tables.has_prompts(store.db) else 0
        below = _below_zero_shot(chosen.config) if head is None and self._bank_size else None
        if below is not None:  # the newest head did not beat the zero-shot nearest prompt on its own validation split
            ensemble, zero_shot = below
            self.notes.append(
                f"Model A head {chosen.config.id} scored Avg-Cos {ensemble:.4f} on its validation split, not above the "
                f"zero-shot nearest prompt ({zero_shot:.4f}): describing with the nearest prompt instead. Use "
                f"`--head {chosen.config.id}` to describe with it anyway, or train with more pairs."
            )
            self._config, self._folder, self.head_id = None, None, None
        self.alpha = self._config.ensemble_alpha if self._config else 0.0
        if self._bank_size == 0 and self._config is None:
            raise NothingToDescribeWithError(
                "The prompt bank is empty and no Model A is trained, so there is nothing to describe with. Add "
                "prompts (`clipstore prompts add FILE`), or ingest images that carry prompts and run `clipstore train`."
            )
        if self._config is not None:
            self.knn = self._config.knn
            self.knn_choice = KnnChoice("head", f"Tuned by `clipstore train` on the validation split of head {self.head_id}.")
        elif below is not None:
            self.knn = KnnParams(k=1)
            self.knn_choice = KnnChoice(
                "head-below-zero-shot",
                f"Head {chosen.config.id} did not beat the zero-shot nearest prompt on its validation split: K = 1, the "
                "nearest prompt.", avg_cos=below[0], nearest_avg_cos=below[1],
            )
        else:
            self.knn, self.knn_choice = self._untuned_knn()
        self._image_prompts = None

    def _untuned_knn(self) -> tuple[KnnParams, KnnChoice]:
        """Model B's parameters without a head: `model_b.choose_untuned_knn` on the store's own pairs."""
        from clipstore.describe.pairs import load_pairs

        if self._bank_size > UNTUNED_MAX_BANK:
            defaults = KnnParams()
            why = (
                f"No trained Model A and a bank of {self._bank_size:,} prompts (more than {UNTUNED_MAX_BANK:,}): "
                f"Model B keeps its defaults (K = {defaults.k}, Distance_Dim = {defaults.distance_dim}), tuned on a "
                "large bank; `clipstore train` tunes them on this store."
            )
            return defaults, KnnChoice("defaults", why)
        pairs = load_pairs(self.store.db)
        bank = bank_view(self.store, [])
        if len(pairs) < UNTUNED_MIN_PAIRS:  # not worth embedding their prompts: the rule is K = 1 anyway
            return choose_untuned_knn(bank, pairs.embeddings, np.zeros((len(pairs), MINILM_DIM), np.float32))
        return choose_untuned_knn(bank, pairs.embeddings, _minilm_for(self.store, list(pairs.prompts)))

    # --- models ---------------------------------------------------------------------------------------------

    @property
    def model_a(self):
        """The head's Model A, loaded on first use (its tower in bf16 when the store encodes in bf16)."""
        if self._model is None and self._config is not None:
            self._model = load_head_model(self.store, self._folder, self._config)
            if self._model.visual is not None and self.store.encoder.precision == "bf16":
                import torch

                self._model.visual.to(torch.bfloat16)
        return self._model

    def _predict_a(self, image_embedding: np.ndarray, pixels) -> np.ndarray:
        from clipstore.describe.model_a import predict_from_embeddings, predict_from_pixels

        if self._config.vision_tuned:
            return predict_from_pixels(self.model_a, pixels[None])[0]
        return predict_from_embeddings(self.model_a, image_embedding[None])[0]

    def _predict_b(self, image_embedding: np.ndarray, k: int, exclude_image: str | None) -> np.ndarray | None:
        images = None
        if self.use_images:
            pairs, vectors = self._stored_image_prompts()
            keep = np.array([i != exclude_image for i in pairs.ids], bool)
            images = (pairs.embeddings[keep], vectors[keep])
        return predict_for_image(self.store.db, image_embedding, self.knn.with_k(k), bank=bool(self._bank_size), images=images)

    def _stored_image_prompts(self):
        """The stored images that carry a prompt and their prompts' MiniLM embeddings (loaded once)."""
        from clipstore.describe.pairs import load_pairs

        if self._image_prompts is None:
            pairs = load_pairs(self.store.db)
            self._image_prompts = (pairs, _minilm_for(self.store, list(pairs.prompts)))
        return self._image_prompts

    # --- describing -----------------------------------------------------------------------------------------

    def describe_decoded(
        self, image, *, k: int | None = None, alpha: float | None = None, top: int = 5, exclude_image: str | None = None
    ) -> Description:
        """Describe a decoded RGB PIL image."""
        encoder = self.store.encoder
        pixels = encoder.preprocess(image)
        embedding = encoder.encode_pixels(pixels[None])[0]
        return self.describe_embedding(embedding, pixels, k=k, alpha=alpha, top=top, exclude_image=exclude_image)

    def describe_embedding(
        self, embedding: np.ndarray, pixels=None, *, k: int | None = None, alpha: float | None = None,
        top: int = 5, exclude_image: str | None = None,
    ) -> Description:
        """Describe from a CLIP image embedding (and the preprocessed pixels, needed by a tuned-tower head)."""
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise InvalidOptionError(f"alpha must be within [0, 1], not {alpha}")
        embedding = np.asarray(embedding, np.float32)
        embedding = embedding / max(float(np.linalg.norm(embedding)), 1e-12)
        notes = list(self.notes)
        b = self._predict_b(embedding, k or self.knn.k, exclude_image)
        a = None
        if self._config is not None:
            if pixels is None and self._config.vision_tuned:
                raise ValueError("this head fine-tuned the vision tower: describe needs the image, not only its embedding")
            a = self._predict_a(embedding, pixels)
        if a is not None and b is not None:
            weight = self.alpha if alpha is None else float(alpha)
            method = "ensemble" if 0.0 < weight < 1.0 else ("model_a" if weight == 1.0 else "model_b")
        elif a is not None:
            weight, method = 1.0, "model_a"
            notes.append("The prompt bank is empty: Model A alone, and no prompt texts to show.")
        else:
            weight, method = 0.0, "model_b"
        # A missing part stands in for itself: its weight is 0, so the blend is the other part, normalised.
        mixed = blend(a if a is not None else b, b if b is not None else a, weight).astype(np.float32)
        return Description(
            mixed,
            tuple(self.nearest_prompts(mixed, top)),
            float(weight),
            {"a": a, "b": b},
            method,
            self.head_id,
            self.knn.with_k(k),
            tuple(notes),
            self.knn_choice if k is None or k == self.knn.k else KnnChoice(
                "option", f"K = {k} as asked; Distance_Dim by the rule {self.knn_choice.rule!r}: {self.knn_choice.why}"
            ),
        )

    def nearest_prompts(self, minilm_vector: np.ndarray, n: int) -> list[PromptHit]:
        """The n bank prompts nearest a MiniLM-space vector (cosine), via LanceDB (its index on a large bank)."""
        if not self._bank_size or n <= 0:
            return []
        found = prompts_near(tables.open_prompts(self.store.db), minilm_vector, n)
        return [PromptHit(hit.id, hit.text, round(hit.score, 6)) for hit in found]


def describe_paths(describer: Describer, root: str, *, k=None, alpha=None, top: int = 5, progress=None) -> Iterator[DescribedFile | FileFailure]:
    """Describe every image under `root` (a folder, recursively, or one file); failures are yielded, not raised."""
    from clipstore.imaging import load_image
    from clipstore.ingest.walk import walk_images

    found = list(walk_images(root))
    report = progress or silent
    for done, item in enumerate(found, start=1):
        if isinstance(item, FileFailure):
            yield item
        else:
            try:
                image = load_image(item.path, min_side=describer.store.model.decode_min_side).image
                yield DescribedFile(item.path, describer.describe_decoded(image, k=k, alpha=alpha, top=top))
            except ClipstoreError as exc:
                yield FileFailure(item.path, str(exc))
            except OSError as exc:
                yield FileFailure(item.path, f"cannot read the file ({exc.strerror or exc})")
        report(DESCRIBE_STAGE, done, len(found))


def _below_zero_shot(config) -> tuple[float, float] | None:
    """(ensemble, zero-shot) validation Avg-Cos of a head whose ensemble did not beat zero-shot CLIP's nearest
    prompt on its own validation split; None when it did, when either was not recorded, or with no head."""
    if config is None:
        return None
    ensemble = float(config.validation.get("ensemble", float("nan")))
    zero_shot = float(config.validation.get("zero_shot", float("nan")))
    if np.isnan(ensemble) or np.isnan(zero_shot) or ensemble > zero_shot:
        return None
    return ensemble, zero_shot


def _minilm_for(store: "StoreContext", texts: list[str]) -> np.ndarray:
    """MiniLM embeddings of texts: the bank's stored ones where the text is in the bank, else computed."""
    vectors = np.zeros((len(texts), MINILM_DIM), np.float32)
    if not texts:
        return vectors
    from clipstore.prompts.bank import load_bank

    ids, _, bank = load_bank(store.db)
    position = {pid: i for i, pid in enumerate(ids)}
    missing = []
    for row, text in enumerate(texts):
        found = position.get(prompt_id(text))
        if found is None:
            missing.append(row)
        else:
            vectors[row] = bank[found]
    if missing:
        vectors[missing] = store.minilm.encode([texts[i] for i in missing])
    return vectors
