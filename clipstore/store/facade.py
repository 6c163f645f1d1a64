"""The Store: one folder of LanceDB tables of image vectors (on the local disk or on object storage), and the
operations on them."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Iterable, Union

import numpy as np  # loaded with the searcher anyway; named in signatures

from clipstore.db import layout, migrate, tables, vector_index
from clipstore.errors import InvalidOptionError, ModelMismatchError, StoreDamagedError, StoreNotFoundError
from clipstore.db.context import StoreContext
from clipstore.db.identities import locate
from clipstore.db.location import StoreLocation
from clipstore.imaging import DEFAULT_MAX_MEGAPIXELS, load_image
from clipstore.ingest.run import FolderIngest, IngestOptions, check_source, read_prompt_manifest
from clipstore.ingest.sources import check_source_exists, open_source
from clipstore.prompts.files import read_prompt_file
from clipstore.prompts.bank import PromptBank, PromptHit, PromptInsertReport, PromptRemoveReport, StoredPrompt, dedup_threshold
from clipstore.prompts.nearest import update_bank_index
from clipstore.encoders.identity import DEFAULT_MODEL, ModelIdentity, resolve_model
from clipstore.paths import default_store_path, store_location
from clipstore.results import ImageRecord, IngestReport, MigrationStatus, SearchHit, StoreInfo
from clipstore.search.index import IndexReport, build_index, index_state, update_index
from clipstore.search.searcher import ImageSearcher, normalise_prefix
from clipstore.progress import Progress

if TYPE_CHECKING:
    from typing import Iterator, Mapping, Sequence

    import lancedb
    from PIL import Image

    from clipstore.db.fragments import GcReport
    from clipstore.describe.describer import DescribedFile, Describer, Description
    from clipstore.ingest.distributed import RayOptions
    from clipstore.describe.evaluate import EvalReport
    from clipstore.finetune.options import FinetuneOptions
    from clipstore.finetune.run import FinetuneReport
    from clipstore.switch.locations import RelinkReport
    from clipstore.switch.reembed import ReembedReport
    from clipstore.switch.rollback import RollbackReport
    from clipstore.finetune.retrieval import RetrievalReport
    from clipstore.describe.heads import HeadInfo
    from clipstore.results import FileFailure
    from clipstore.describe.train import TrainOptions, TrainReport

    from clipstore.encoders.clip import ClipEncoder
    from clipstore.encoders.minilm import MiniLMEncoder

ImageQuery = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, "Image.Image"]


class Store:
    """A clipstore store. Create or open one with `clipstore.connect(path)`.

    The store's tables are plain LanceDB tables under `path` (a local folder, or an object-store URI such as
    `s3://bucket/photos.clipstore`; `location` has its storage options): `images`, `files`, `prompts`, and the
    bookkeeping tables `_clipstore_settings` and `_clipstore_migrations`. Its vectors were made by
    `store.model`, which is loaded lazily the first time something needs embedding.
    """

    def __init__(self, location: StoreLocation, db: "lancedb.DBConnection", model: ModelIdentity, *, device: str | None, precision: str):
        self.location = location
        self.path = location.root
        self.db = db
        self.context = StoreContext(location, db, model, device=device, precision=precision)
        self._searcher = ImageSearcher(db)
        self._tables = tables.ActiveTables(db)  # what `describer` checks for changes, read cheaply
        self._describers: dict = {}

    @property
    def model(self) -> ModelIdentity:
        """The identity of the model that made the store's current vectors (follows a re-embed switch made by
        this or another process)."""
        return self.context.model

    def __repr__(self) -> str:
        return f"Store({self.path!r}, model={self.model.spec!r})"

    @property
    def encoder(self) -> "ClipEncoder":
        """The store's CLIP encoder (loaded on first use, shared across stores in this process)."""
        return self.context.encoder

    def ingest(
        self,
        folder: str | os.PathLike[str],
        *,
        prune: bool = False,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
        batch_size: int = 32,
        progress: Progress | None = None,
        on_lock_wait: Callable[[], None] | None = None,
        manifest: str | os.PathLike[str] | None = None,
        engine: str = "local",
        ray: "RayOptions | None" = None,
    ) -> IngestReport:
        """Embed every new or changed image under `folder` (recursively; a single file works too).

        `folder`: a local folder or file, or an object-store prefix (`s3://bucket/photos`; read with the store's
        storage options when the store is on the same kind of storage, else with the standard environment
        variables AWS_ENDPOINT, AWS_ACCESS_KEY_ID, ...). Unchanged files (same path, size and mtime) are skipped
        without being read; identical bytes under several paths are embedded once. Files that cannot be ingested
        are listed in `report.failed` and never stop the run. With `prune=True`, rows of files under `folder`
        that no longer exist are removed. `max_megapixels` rejects larger images (decompression-bomb guard).
        `progress(stage, done, total)` is called as the work goes on: stage "embed images" counts the files
        found (total) and processed (done), then stage "prompt bank" counts the prompts being offered to the
        bank. Only one process writes to a store at a time: when another one is writing, `on_lock_wait()` is
        called once and the ingest waits.

        Prompts: a newly embedded image's prompt is read from `manifest` (CSV/TSV/JSONL with `path` and
        `prompt`), else from its metadata (Stable Diffusion `parameters` PNG chunk, ComfyUI workflow, EXIF
        description/comment), else from a `name.txt` caption beside it. It is stored on the image row
        (`prompt`, `prompt_source`) and offered to the prompt bank through its dedup gate. The bank catches up
        at the end of every run from every stored image whose prompt it was not offered yet (`prompt_offered`),
        so prompts of an earlier run that was interrupted, crashed or could not update the bank are not lost.

        `engine="ray"` reads, decodes and embeds on a Ray cluster (`ray`: a `RayOptions`, default a cluster
        found or started on this machine; needs `pip install 'clipstore[distributed]'`), with the same result
        as the local engine (see `clipstore.ingest.distributed`). DistributedError when Ray is missing or the
        cluster cannot be reached.
        """
        from clipstore.db.fragments import clean_interrupted
        from clipstore.db.locking import write_lock

        if engine not in ("local", "ray"):
            raise InvalidOptionError(f"Unknown ingest engine {engine!r}: use 'local' (this process) or 'ray' (a Ray cluster).")
        source = open_source(folder, exclude=(self.path,), storage_options=self._source_options(folder))
        check_source_exists(source, prune=prune)
        manifest_prompts = read_prompt_manifest(manifest) if manifest is not None else None
        options = IngestOptions(max_megapixels=max_megapixels, batch_size=batch_size)
        arguments = dict(options=options, progress=progress, manifest_prompts=manifest_prompts, prompt_bank=self._prompt_bank, source=source)
        with write_lock(self.location, on_wait=on_lock_wait):
            clean_interrupted(self.db)  # fragments a killed distributed ingest wrote and never committed
            if engine == "ray":
                from clipstore.ingest.distributed import RayIngest, RayOptions, ray_connection

                ray = ray or RayOptions()
                with ray_connection(ray):
                    context = self.context
                    run = RayIngest(
                        self.db, source.root, location=self.location, model=self.model, device=context.device,
                        precision=context.precision, ray_options=ray, **arguments,
                    )
                    report = run.run(prune=prune)
            else:
                context = self.context
                report = FolderIngest(self.db, lambda: context.image_embedder, source.root, **arguments).run(prune=prune)
            update_index(self.db, tables.open_images(self.db), progress)  # indexed past the threshold, kept current
            return report

    def _source_options(self, folder: str | os.PathLike[str]) -> "dict[str, str] | None":
        """Storage options to read an object-store source with: the store's, when it is on the same kind of
        storage (the usual case: one bucket, one set of credentials); else the environment's."""
        from clipstore.paths import is_uri

        text = os.fspath(folder)
        if self.location.remote and is_uri(text) and text.partition("://")[0] == self.path.partition("://")[0]:
            return self.location.storage_options
        return None

    def gc(self) -> "GcReport":
        """Delete the files no version of the store's tables names: fragments a distributed ingest wrote and
        never committed (it was killed, or a worker died and ran its batch again), what failed commits left.
        Keeps every table version. Takes the store's write lock (no writer is between writing and committing)."""
        from clipstore.db.fragments import collect_garbage
        from clipstore.db.locking import write_lock

        with write_lock(self.location):
            return collect_garbage(self.db)

    # --- the prompt bank ------------------------------------------------------------------------------------

    @property
    def minilm(self) -> "MiniLMEncoder":
        """The all-MiniLM-L6-v2 sentence encoder (loaded on first use, shared in this process)."""
        return self.context.minilm

    @property
    def _prompt_bank(self) -> PromptBank:
        return PromptBank(self.db, lambda: self.encoder, lambda: self.minilm)

    def add_prompts(
        self,
        texts_or_path: "Iterable[str] | str | os.PathLike[str]",
        *,
        source: str | None = None,
        column: str | None = None,
        progress: Progress | None = None,
    ) -> PromptInsertReport:
        """Add prompts to the bank: an iterable of texts, or the path of a prompt file.

        Files: one prompt per line (.txt), CSV/TSV, JSONL and JSON arrays (`column`, default the first of
        prompt, text, caption, positive_prompt), Parquet (e.g. DiffusionDB metadata); a file that is not text
        in one of these (an image, a binary file, text that is not UTF-8) raises PromptFileError and adds
        nothing. Prompts are kept in the order given unless a kept prompt is a near-duplicate (MiniLM cosine
        >= the store's threshold, 0.85): those are reported in `duplicates` with the prompt they duplicate.
        Prompts holding control characters are reported in `rejected` with the reason; blank ones are
        skipped. `source` labels the rows (default: the file name). `progress(stage, done, total)` follows the
        embedding work, as stage "add prompts".
        """
        if isinstance(texts_or_path, (str, os.PathLike)):
            return self.add_prompt_files([texts_or_path], source=source, column=column, progress=progress)
        return self._add_prompt_texts(list(texts_or_path), source, progress)

    def add_prompt_files(
        self,
        paths: "Iterable[str | os.PathLike[str]]",
        *,
        source: str | None = None,
        column: str | None = None,
        progress: Progress | None = None,
    ) -> PromptInsertReport:
        """Add the prompts of several files (in order, dedup across all of them); see `add_prompts`.

        Every file is read before anything is inserted: when one is refused, none of them is added.
        """
        paths = list(paths)
        readers = [read_prompt_file(path, column) for path in paths]  # checks each file's first bytes now
        texts: list[str] = []
        sources: list[str | None] = []
        for path, reader in zip(paths, readers):
            found = list(reader)
            texts += found
            sources += [source or os.path.basename(os.fspath(path))] * len(found)
        return self._add_prompt_texts(texts, sources, progress)

    def _add_prompt_texts(self, texts: list[str], source, progress) -> PromptInsertReport:
        from clipstore.db.locking import write_lock

        with write_lock(self.location):
            return self._prompt_bank.add(texts, source, progress=progress)

    def remove_prompts(
        self,
        ids: "Iterable[str] | str | None" = None,
        source: str | None = None,
        match: str | None = None,
        dry_run: bool = False,
    ) -> PromptRemoveReport:
        """Remove prompts from the bank; at least one selector is required, and several narrow each other.

        ids: whole prompt ids or unambiguous prefixes of at least 6 characters (an unknown, ambiguous or too
        short one raises PromptSelectionError and removes nothing). source: every prompt with that source
        label. match: every prompt whose text contains `match` (case-insensitive substring). Only the selected
        rows are deleted: each frees its slot, so a near-duplicate of it can be added afterwards. With
        `dry_run` nothing changes and the report lists what would be removed.
        """
        bank = self._prompt_bank
        if dry_run:
            return bank.remove(ids, source, match, dry_run=True)
        from clipstore.db.locking import write_lock

        with write_lock(self.location):
            return bank.remove(ids, source, match)

    def count_prompts(self) -> int:
        """Number of prompts kept in the bank."""
        return self._prompt_bank.count()

    def list_prompts(self, limit: int = 20, offset: int = 0) -> list[StoredPrompt]:
        """Kept prompts in insertion order, `limit` of them from `offset`."""
        return self._prompt_bank.list(limit, offset)

    def search_prompts(self, text: str, k: int = 10) -> list[PromptHit]:
        """The k bank prompts closest in meaning to `text` (all-MiniLM-L6-v2 cosine), best first."""
        return self._prompt_bank.search(text, k)

    def prompt_dedup_threshold(self) -> float | None:
        """The near-duplicate threshold every prompt insert enforces (None before the dedup migration)."""
        return dedup_threshold(self.db)

    # --- describing images: Model A, Model B and their ensemble -------------------------------------------------

    def train(self, options: "TrainOptions | None" = None, *, progress=None, **overrides) -> "TrainReport":
        """Train Model A on the store's (image, prompt) pairs, tune Model B and the ensemble alpha on the
        validation split, and save the head in the store (see `clipstore.describe.train`).

        Pass a `TrainOptions` or its fields as keywords (e.g. `store.train(epochs=5, freeze_vision=True)`).
        `progress(stage, done, total)` follows the work. Takes the store's write lock only to record the head,
        so ingest keeps working while a head trains.
        """
        from dataclasses import replace

        from clipstore.describe.train import TrainOptions, train_head

        options = replace(options or TrainOptions(), **overrides)
        return train_head(self.context, options, progress)  # takes the write lock only to record the head

    def heads(self) -> "list[HeadInfo]":
        """The trained Model A heads, newest first (`stale` ones were trained on another encoder)."""
        from clipstore.describe.heads import list_heads

        return list_heads(self.db, self.location, self.model)

    def describer(self, *, head: "str | os.PathLike[str] | None" = None, use_images: bool = False) -> "Describer":
        """A describer for this store's current bank and heads (loads the head once; reused by `describe`
        until a table changes)."""
        from clipstore.describe.describer import Describer
        from clipstore.db.layout import HEADS_TABLE

        active = self._tables.names()
        versions = tuple(self._tables.version(name) for name in (HEADS_TABLE, active["prompts"], active["images"]))
        key = (os.fspath(head) if head is not None else None, use_images, versions, self.model.to_json())
        cached = self._describers.get(key)
        if cached is None:
            cached = Describer(self.context, head=head, use_images=use_images)
            self._describers = {key: cached}  # keep one: a new table version makes the old one stale
        return cached

    def describe(
        self,
        image: ImageQuery,
        *,
        k: int | None = None,
        alpha: float | None = None,
        top: int = 5,
        head: "str | os.PathLike[str] | None" = None,
        use_images: bool = False,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    ) -> "Description":
        """The prompt that best explains `image` (a path, bytes or PIL image).

        Model B (weighted KNN over the bank, k neighbours) blended with the newest trained Model A head by
        eq. 6 with its tuned alpha (or `alpha`); `description.prompts` are the `top` bank prompts nearest the
        blended MiniLM embedding. Without a trained head Model B is used alone, and `notes` says so.
        `head`: a head id (prefix) or folder; one trained on another encoder raises ModelMismatchError.
        `use_images`: Model B also fuses the prompts of the most similar stored images.
        """
        decoded = load_image(image, max_megapixels=max_megapixels, min_side=self.model.decode_min_side)
        return self.describer(head=head, use_images=use_images).describe_decoded(decoded.image, k=k, alpha=alpha, top=top)

    def describe_folder(
        self,
        folder: "str | os.PathLike[str]",
        *,
        k: int | None = None,
        alpha: float | None = None,
        top: int = 5,
        head: "str | os.PathLike[str] | None" = None,
        use_images: bool = False,
        progress: Progress | None = None,
    ) -> "Iterator[DescribedFile | FileFailure]":
        """Describe every image under `folder` (or one file), yielding a DescribedFile or a FileFailure each;
        `progress(stage, done, total)` is called after each file, as stage "describe images"."""
        from clipstore.describe.describer import describe_paths

        root = check_source(folder)
        describer = self.describer(head=head, use_images=use_images)
        return describe_paths(describer, root, k=k, alpha=alpha, top=top, progress=progress)

    def evaluate(
        self,
        *,
        pairs: "str | os.PathLike[str] | None" = None,
        head: "str | os.PathLike[str] | None" = None,
        ablation: "tuple[float | None, ...] | None" = None,
        progress=None,
    ) -> "EvalReport":
        """Avg-Cos (eq. 8) of the zero-shot baseline, the data-filter ablation, Model A, Model B and the
        ensemble on held-out pairs: the store's test split, or `pairs` (a CSV/TSV/JSONL manifest with path and
        prompt, like ingest's --manifest). See `clipstore.describe.evaluate`."""
        from clipstore.describe.evaluate import DEFAULT_ABLATION, evaluate, external_pairs

        held_out = None
        if pairs is not None:
            records = sorted(read_prompt_manifest(pairs).items())
            held_out = external_pairs(self.context, records, progress)
        return evaluate(self.context, pairs=held_out, head=head, ablation=DEFAULT_ABLATION if ablation is None else ablation, progress=progress)

    # --- fine-tuning the encoder and switching the store's vectors ------------------------------------------

    def finetune(
        self, options: "FinetuneOptions | None" = None, *, apply: bool = False, force: bool = False, progress=None, **overrides
    ) -> "FinetuneReport":
        """Fine-tune the store's CLIP model for image retrieval while keeping it aligned with text (seed 003;
        `method="mcip"` or `"2sft"`, see `clipstore.finetune`) and save it in the store under `models/<id>/`.

        With `apply=True` the store is then re-embedded with it and switched (see `reembed`) — only when its
        validation score beat the base model's (`report.improved`), or with `force=True`; otherwise the model is
        saved, the store keeps its model, and `notes` says so.
        """
        from dataclasses import replace

        from clipstore.finetune.options import FinetuneOptions
        from clipstore.finetune.run import finetune

        options = replace(options or FinetuneOptions(), **overrides)
        report = finetune(self.context, options, progress)  # writes only its own folder: ingest may go on meanwhile
        if apply and (report.improved or force):
            report = replace(report, switch=self.reembed(report.folder, progress=progress))
        elif apply:
            report = replace(report, notes=report.notes + (
                f"Not applied: the store keeps {self.model.spec}. To switch to the model anyway: "
                f"clipstore reembed --model {report.model_id} (or finetune --apply --force).",
            ))
        return report

    def finetuned_models(self) -> list[dict]:
        """The fine-tuned models saved in this store (their configs, with `folder` and the `parent` identity
        located in this store), newest first."""
        from clipstore.finetune.registry import finetuned_models
        from clipstore.db.identities import relinked

        return finetuned_models(self.location, relinked(self.db))

    def reembed(self, model: str, *, drop_missing: bool = False, batch_size: int = 32, progress=None) -> "ReembedReport":
        """Re-embed every image with `model` and switch the store to it atomically (see `clipstore.switch.reembed`).

        model: a model spec (`ARCH:TAG`, `ARCH:/path/to/checkpoint`, ...), or a fine-tuned model of this store
        (its id, id prefix or folder). Searches keep using the current vectors until the switch; an
        interrupted run resumes. The prompt bank's CLIP text embeddings are kept when the new model's text
        encoder is the current one's (an MCIP fine-tune) and re-embedded otherwise.
        """
        from clipstore.db.locking import write_lock
        from clipstore.finetune.registry import resolve_target
        from clipstore.switch.reembed import reembed

        target, text_changed = resolve_target(self.context, model)
        with write_lock(self.location):
            return reembed(self.context, target, text_changed=text_changed, drop_missing=drop_missing, batch_size=batch_size, progress=progress)

    def rollback(self) -> "RollbackReport":
        """Undo the last model switch: the previous model, its vectors and the file rows as they were then."""
        from clipstore.db.locking import write_lock
        from clipstore.switch.rollback import rollback

        with write_lock(self.location):
            return rollback(self.context)

    def relink_model(self, path: "str | os.PathLike[str]") -> "RelinkReport":
        """Tell the store where the checkpoint file of its model is now, after it was moved (once: the store
        remembers it). The file must have the SHA-256 the store's vectors were made with (or that of a model a
        rollback returns to), else ModelMismatchError. Fine-tuned models inside the store need no relinking:
        they move with it."""
        from clipstore.switch.locations import relink
        from clipstore.db.locking import write_lock

        with write_lock(self.location):
            report = relink(self.context, path)
        self.context.forget_model()  # locate the model again on next use
        return report

    def evaluate_retrieval(
        self,
        *,
        models: "list[str] | None" = None,
        labels_from_folders: bool = False,
        label_manifest: "str | None" = None,
        label_field: str = "label",
        k: int = 10,
        template: str | None = None,
        splits: "tuple[str, ...]" = ("test",),
        progress=None,
    ) -> "RetrievalReport":
        """Image->image mAP@k / R@1, text->image R@1 / R@10, zero-shot and k-NN classification accuracy on the
        store's held-out labelled images, for the store's model and each of `models` side by side. Default:
        when the store uses one of its fine-tuned models, the base model it was tuned from (its parent); else
        the newest fine-tuned model of this store, if any. See `clipstore.finetune.retrieval`."""
        from clipstore.finetune.data import load_images
        from clipstore.finetune.options import FinetuneOptions
        from clipstore.finetune.registry import resolve_target
        from clipstore.finetune.retrieval import DEFAULT_TEMPLATE, check_template, evaluate_retrieval

        check_template(template or DEFAULT_TEMPLATE)  # before any image is loaded
        options = FinetuneOptions(labels_from_folders=labels_from_folders, label_manifest=label_manifest, label_field=label_field)
        images = load_images(self.context, options)
        saved = self.finetuned_models()
        current = self.model
        compared = [(f"{_model_name(current, saved)} (store)", current)]
        own = next((config for config in saved if _is_saved_model(current, config)), None)
        if models is None and own is not None:
            parent = ModelIdentity.from_dict(own["parent"])
            compared.append((f"{_model_name(parent, saved)} (base of {own['id']})", parent))
        else:
            for spec in models if models is not None else [config["folder"] for config in saved[:1]]:
                identity, _ = resolve_target(self.context, spec)
                compared.append((_model_name(identity, saved), identity))
        encoders = [(name, self.context.encoder_for(identity)) for name, identity in compared]
        return evaluate_retrieval(self.context, encoders, images, k=k, template=template or DEFAULT_TEMPLATE, splits=splits, progress=progress)

    def search_text(self, text: str, k: int = 10, *, path_prefix: str | None = None, exact: bool = False) -> list[SearchHit]:
        """The k images best matching a text query, best first, scored by cosine similarity (see
        `search_vector` for `exact`).

        The text is embedded in float32 by the model's numpy text tower when this machine has it cached (see
        `clipstore.encoders.tower_cache`; it is cached whenever the full model is loaded), else by the full
        open_clip encoder; the Python API and `clipstore search` take the same path, so their scores agree."""
        vector = self.context.embed_queries("text", [text])[0]
        return self.search_vector(vector, k, path_prefix=path_prefix, exact=exact)

    def search_image(
        self,
        image: ImageQuery,
        k: int = 10,
        *,
        path_prefix: str | None = None,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
        exact: bool = False,
    ) -> list[SearchHit]:
        """The k stored images most similar to `image` (a path, raw bytes or a PIL image), best first.

        An image searched by itself ranks first with a score of about 1.0. See `search_vector` for `exact`.
        The image is embedded like a text query in `search_text`: by the model's cached numpy vision tower
        when there is one (open_clip ViTs), else by the full encoder.
        """
        vector = self.embed_image(image, max_megapixels=max_megapixels)
        return self.search_vector(vector, k, path_prefix=path_prefix, exact=exact)

    def search(
        self,
        text: str | None = None,
        image: "ImageQuery | np.ndarray | None" = None,
        *,
        negative: "str | Sequence[str] | None" = None,
        weights: "Mapping[str, float] | None" = None,
        k: int = 10,
        path_prefix: str | None = None,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
        exact: bool = False,
    ) -> list[SearchHit]:
        """The k images best matching a combined query, best first: a text, an image, or both, minus negative
        texts ("beach" with negative "people": beaches, those with people ranked lower).

        text: what to look for (as in `search_text`). image: a path, raw bytes or a PIL image (embedded as in
        `search_image`), or an embedding of shape (embed_dim,), e.g. `store.image_embedding(id)` for "more
        like this stored image". negative: one text or several to move away from. weights: {"text", "image",
        "negative"} (defaults 1, 1, 0.5; see `clipstore.search.query`): the query vector is
        w_text·T + w_image·I − w_negative·ΣN (each part unit length), normalised, and a hit's score is its
        cosine with that vector. Blank texts count as not given. InvalidOptionError when there is neither a
        text nor an image, for an unknown or negative weight, or when the parts cancel out; InvalidImageError
        for an image that cannot be read. With a text alone the results equal `search_text`'s, with an image
        alone `search_image`'s. `path_prefix` and `exact` as in `search_vector`.
        """
        from clipstore.search.query import combine, negatives_of, query_weights

        parts = query_weights(weights)
        text = text if text is not None and text.strip() else None
        negatives = negatives_of(negative)
        if text is None and image is None:
            combine(None, None, None, parts)  # raises: nothing to search for
        image_vector = None
        if isinstance(image, np.ndarray):
            image_vector = image
        elif image is not None:
            image_vector = self.embed_image(image, max_megapixels=max_megapixels)
        texts = ([text] if text is not None else []) + negatives
        embedded = self.context.embed_queries("text", texts) if texts else None
        text_vector = embedded[0] if text is not None else None
        negative_vectors = embedded[1 if text is not None else 0 :] if negatives else None
        query = combine(text_vector, image_vector, negative_vectors, parts)
        return self.search_vector(query, k, path_prefix=path_prefix, exact=exact)

    def embed_image(self, image: ImageQuery, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> "np.ndarray":
        """An image's query embedding, shape (embed_dim,) float32, unit length, as `search_image` makes it (keep it to
        search with the same image again: `search(image=vector, ...)`). InvalidImageError for an unreadable image."""
        # Decoded first: a bad image fails before any model is loaded.
        decoded = load_image(image, max_megapixels=max_megapixels, min_side=self.model.decode_min_side)
        return self.context.embed_queries("vision", [decoded.image])[0]

    def image(self, image_id: str) -> ImageRecord | None:
        """What the store holds for an image id (a hit's `id`): its paths, size, format and the prompt it carried;
        None when the store has no image with that id."""
        return tables.image_record(self.db, image_id)

    def image_embedding(self, image_id: str) -> "np.ndarray | None":
        """The stored embedding of an image id, shape (embed_dim,) float32 (give it to `search` as the image for
        "more like this"); None when the store has no image with that id."""
        return tables.image_vector(self.db, image_id)

    def search_vector(self, vector, k: int = 10, *, path_prefix: str | None = None, exact: bool = False) -> list[SearchHit]:
        """The k images nearest to an embedding of shape (embed_dim,) made by this store's model.

        When the store has a vector index (past `index_threshold`, or `build_index`), LanceDB answers through it
        (approximate neighbours, exact cosine scores); `exact=True` compares every vector instead. A `path_prefix`
        is a LanceDB filter on the stored paths; the hits are the best images among those under it.
        """
        prefix = normalise_prefix(path_prefix) if path_prefix else None
        return self._searcher.search(vector, k, prefix, exact=exact)

    def build_index(self, *, rebuild: bool = False, progress: Progress | None = None) -> IndexReport:
        """Build a LanceDB vector index (IVF_HNSW_SQ, cosine) on the current images table now, whatever its
        size (and BTREE indexes on the ids and paths searches look up), which searches then use; or, when
        there is one, add the rows ingested since to it. Ingest does this by itself past `index_threshold`.
        The prompt bank's indexes are brought up to date too (built when the bank has reached the threshold).

        `rebuild=True` trains a new index over every row instead. Rows added after the index are still found
        (LanceDB scans them beside it). `progress(stage, done, total)` is called as stage "build index".
        IndexBuildError when the store holds no images. Takes the store's write lock.
        """
        from clipstore.db.locking import write_lock

        with write_lock(self.location):
            report = build_index(self.context, rebuild=rebuild, progress=progress)
            if tables.has_prompts(self.db):  # a bank that reached the threshold before it was checked on writes
                update_bank_index(self.db, tables.open_prompts(self.db), progress)
            return report

    @property
    def index_threshold(self) -> int:
        """Rows from which the store's tables get their LanceDB indexes automatically (the images' vector index
        and the scalar indexes its lookups use, the prompt bank's), when an ingest or a prompt addition reaches
        it. Below it searches are exact, which at that size is as fast as an index and needs no build."""
        return vector_index.index_threshold(self.db)

    def set_index_threshold(self, rows: int) -> None:
        """Change `index_threshold` for this store (a store setting, seen by every process). Tables already past
        it are indexed by the next ingest or prompt addition, or at once by `build_index`."""
        from clipstore.db.locking import write_lock

        with write_lock(self.location):
            vector_index.set_index_threshold(self.db, rows)

    def image_paths(self, image_id: str) -> list[str]:
        """Every path the store holds for an image id (several paths when their bytes are identical), sorted."""
        return tables.paths_by_image(self.db, [image_id]).get(image_id, [])

    def count_images(self) -> int:
        """Number of distinct images (distinct contents) in the store."""
        return tables.open_images(self.db).count_rows()

    def count_files(self) -> int:
        """Number of file paths recorded in the store."""
        return self.db.open_table(layout.FILES).count_rows()

    def migrations(self) -> tuple[MigrationStatus, ...]:
        """Every migration this clipstore knows, with whether and when it was applied to this store."""
        return migrate.migration_status(self.db)

    def info(self) -> StoreInfo:
        """Where the store is, how many images and files it holds, its model, its migrations and its vector
        index (None when it has none)."""
        has_bank = tables.has_prompts(self.db)
        return StoreInfo(
            self.path,
            self.count_images(),
            self.count_files(),
            self.model.to_dict(),
            self.migrations(),
            self.count_prompts() if has_bank else 0,
            self.prompt_dedup_threshold(),
            index_state(tables.open_images(self.db)),
            self.index_threshold,
        )


def connect(
    path: str | os.PathLike[str] | None = None,
    *,
    storage_options: "dict[str, str] | None" = None,
    model: str | None = None,
    create: bool = True,
    apply_migrations: bool = True,
    device: str | None = None,
    precision: str = "auto",
) -> Store:
    """Open the store at `path` (default: `clipstore.default_store_path()`), creating it when `create` is true.

    path: a local folder, or an object-store URI as LanceDB reads them (`s3://bucket/photos.clipstore`,
        `gs://...`, `az://...`). storage_options: for object storage, LanceDB's options (e.g. `aws_endpoint`,
        `aws_access_key_id`, `aws_secret_access_key`, `aws_region`, `allow_http`); Lance also reads the
        standard environment variables (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, ...). A bucket that does not
        exist, refused credentials or an unreachable endpoint raise StorageError.
    model: a model spec (`ARCH:TAG`, `ARCH:/path/to/checkpoint`, `clipstore-mini`). For a new store it
        chooses the model (default `ViT-B-32:laion2b_s34b_b79k`); for an existing store it must name the
        store's own model, else ModelMismatchError. Omit it to use the store's model.
    device: "cpu", "cuda", ... (default: cuda when available). precision: "auto" (bf16 on CPUs with native
        bf16 and on CUDA, else fp32), "fp32" or "bf16".
    Pending migrations are applied on connect (unless `apply_migrations` is false, which also refuses to
    create a store); a store written by a newer clipstore raises StoreVersionError.
    """
    location = StoreLocation(store_location(path) if path is not None else default_store_path(), storage_options)
    store_path = location.root
    entries = location.entries()
    exists = f"{layout.MIGRATIONS}.lance" in entries
    if not exists:
        if not create or not apply_migrations:
            raise StoreNotFoundError(
                f"No clipstore store at {store_path}. Create it with `clipstore ingest FOLDER --store {store_path}` "
                "(or clipstore.connect(path) in Python), or pass --store with the path of an existing store."
            )
        if entries and not _only_clipstore_entries(entries):
            raise StoreNotFoundError(
                f"{store_path} is a folder that is not empty and not a clipstore store. Choose a new or empty "
                "folder for the store (e.g. --store ~/photos.clipstore)."
            )
        if not location.remote and os.path.exists(store_path) and not os.path.isdir(store_path):
            raise StoreNotFoundError(f"{store_path} is a file, not a store folder. Choose another --store path.")
    requested = resolve_model(model) if model else None  # a bad spec fails before anything is written
    if not exists:
        from clipstore.encoders.weights import ensure_weights_obtainable

        # A new store's model must be loadable: never leave an empty store behind for weights we cannot get.
        ensure_weights_obtainable(requested or resolve_model(DEFAULT_MODEL))
        if not location.remote:  # object storage has no folders to create
            _create_folder(store_path)
    db = location.connect()
    with location.errors():
        migrate.check_not_newer(db, store_path)
        if exists:
            _check_complete(db, store_path)
        identity = _store_model(db, location, requested)
        if apply_migrations and any(not status.applied for status in migrate.migration_status(db)):
            from clipstore.db.locking import write_lock

            with write_lock(location):
                migrate.apply_pending(migrate.MigrationContext(db, store_path, identity))
                # Another process may have created the store first, with its model: check against that one.
                identity = _store_model(db, location, requested)
    return Store(location, db, identity, device=device, precision=precision)


def _create_folder(store_path: str) -> None:
    """The folder of a new store (LanceDB would create it, failing with its own words)."""
    from clipstore.errors import NotWritableError

    try:
        os.makedirs(store_path, exist_ok=True)
    except OSError as exc:
        raise NotWritableError.from_os_error(
            f"a new store at {store_path}", exc, "Choose a --store path in a folder you can write to."
        ) from exc


def _check_complete(db: "lancedb.DBConnection", store_path: str) -> None:
    """Every table the store's applied migrations created must still be there (a `.lance` folder deleted or
    lost in a partial copy would otherwise fail later, deep inside a command, with LanceDB's own words)."""
    applied = migrate.applied_migrations(db)
    names = tables.table_names(db)
    active = tables.active_tables(db) if layout.SETTINGS in names else {"images": layout.IMAGES, "prompts": layout.PROMPTS}
    created_by = {
        "0001_create_tables": (active["images"], layout.FILES),
        "0002_prompt_bank": (active["prompts"], layout.SETTINGS),
        "0004_model_heads": (layout.HEADS_TABLE,),
    }
    missing = [name for migration, made in created_by.items() if migration in applied for name in made if name not in names]
    if missing:
        raise StoreDamagedError(
            f"The store at {store_path} is damaged: its table{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(name) for name in missing)} {'are' if len(missing) > 1 else 'is'} missing "
            f"(no {', '.join(name + '.lance' for name in missing)} in the store folder). Nothing was changed. "
            "Restore the store folder from a backup or a complete copy, or build a new store from your images: "
            "clipstore ingest FOLDER --store NEW_PATH."
        )


def _only_clipstore_entries(entries: list[str]) -> bool:
    """True when a folder's `entries` are only what a store creation that stopped midway leaves."""
    ours = {layout.LOCK_FILE} | {f"{name}.lance" for name in (layout.IMAGES, layout.FILES, layout.MIGRATIONS, layout.LEASE_TABLE)}
    return set(entries) <= ours


def _store_model(db: "lancedb.DBConnection", location: StoreLocation, requested: ModelIdentity | None) -> ModelIdentity:
    """The model identity of the store; checks a requested model against it."""
    store_path = location.root
    stored = tables.stored_model(tables.open_images(db)) if tables.table_exists(db, tables.active_tables(db)["images"]) else None
    if stored is None:
        return requested or resolve_model(DEFAULT_MODEL)
    stored = locate(db, store_path, stored)
    if requested is None:
        return stored
    if not requested.same_vectors_as(stored):
        if _holds_no_vectors(db):
            return _switch_empty_store_model(db, location, requested)
        raise ModelMismatchError(
            f"The store at {store_path} holds vectors made by {stored.spec} ({stored.embed_dim}-d, weights "
            f"{stored.weights_label}), but --model asks for {requested.spec} ({requested.embed_dim}-d, weights "
            f"{requested.weights_label}). Vectors of different models cannot be mixed: leave out --model to use "
            "the store's own model, or use another --store path for the other model."
        )
    return requested  # same vectors; keeps a checkpoint's new location if it moved


def _holds_no_vectors(db: "lancedb.DBConnection") -> bool:
    """No image, file or prompt rows: nothing made by the store's model yet."""
    names = tables.table_names(db)
    active = tables.active_tables(db)
    return all(db.open_table(name).count_rows() == 0 for name in (active["images"], layout.FILES, active["prompts"]) if name in names)


def _switch_empty_store_model(db: "lancedb.DBConnection", location: StoreLocation, model: ModelIdentity) -> ModelIdentity:
    """A store without vectors has nothing to mix: re-create its images table for the requested model."""
    from clipstore.db.locking import write_lock

    store_path = location.root
    with write_lock(location):
        if _holds_no_vectors(db):
            active = tables.active_tables(db)
            db.drop_table(active["images"])
            db.create_table(active["images"], schema=layout.images_schema(model, store_path))
            if tables.table_exists(db, active["prompts"]):
                db.drop_table(active["prompts"])
                db.create_table(active["prompts"], schema=layout.prompts_schema(model, store_path))
    return _store_model(db, location, model)


def _is_saved_model(identity: ModelIdentity, config: dict) -> bool:
    """True when `identity` is the fine-tuned model saved with `config` (same weights)."""
    from clipstore.encoders.identity import file_sha256

    if not identity.checkpoint_sha256 or identity.pretrained:
        return False
    sha = config.get("model_sha256") or file_sha256(os.path.join(config["folder"], layout.MODEL_WEIGHTS_FILE))
    return sha == identity.checkpoint_sha256


def _model_name(identity: ModelIdentity, saved: list[dict]) -> str:
    """A model's name in a results table: `fine-tuned <id>` for a fine-tuned model of the store, else its spec."""
    own = next((config for config in saved if _is_saved_model(identity, config)), None)
    return f"fine-tuned {own['id']}" if own is not None else identity.spec
