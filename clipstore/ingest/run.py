"""Ingest: walk a folder, decode and embed new image content, and record it in the store.

Work is incremental and crash-safe:
- a file whose path, size and mtime match its `files` row is skipped without being opened;
- content is identified by SHA-256, so a copy or a rename links to the existing image row (no re-embedding);
- rows are committed in batches, image rows before the file rows that point at them, and both writes are
  upserts; a run killed midway leaves only complete rows behind, and re-running finishes the job with no
  duplicate and no lost rows;
- the prompt bank catches up at the end of every run from every stored image whose prompt it has not been
  offered yet (the `prompt_offered` flag), so prompts of images committed by a run that was killed, crashed or
  could not update the bank reach it with the next run, even one that finds every file unchanged.
Throughput: files go through *lanes*, one chunk (a batch) at a time. A lane reads, hashes, decodes and
resizes/crops its chunk in worker threads (hashlib and Pillow release the GIL), then embeds it. With two lanes
(the default on a machine with two or more cores) one lane decodes while the other runs the model, and on the
CPU each lane's forward pass uses its share of the cores (one torch thread each on two cores): a forward pass
that spans every core would make its threads wait at each barrier for a thread the decoder descheduled (see
BENCHMARKS.md, "Ingest throughput"). Results are accepted and committed in walk order whatever lane finishes
first, so the store's rows, the counts and the kill-safe commit order are those of a one-lane run.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Container, Iterator, Mapping

from clipstore.db import first_paths, tables
from clipstore.errors import ClipstoreError, InvalidImageError, ManifestError, SourceNotFoundError
from clipstore.prompts.image_prompts import ImagePrompt, prompt_from_image_bytes
from clipstore.imaging import DEFAULT_MAX_MEGAPIXELS, decode_image
from clipstore.results import FileFailure, IngestReport, _AsDict
from clipstore.ingest.sources import LocalFolder, ObjectPrefix, check_source_exists, open_source
from clipstore.ingest.walk import FoundFile
from clipstore.paths import is_uri
from clipstore.progress import Progress, silent
from clipstore.db import layout

if TYPE_CHECKING:
    import lancedb
    import numpy as np

    from clipstore.encoders.clip import ClipEncoder
    from clipstore.prompts.bank import PromptBank

EMBED_STAGE = "embed images"
"""Ingest's first stage: done/total count the candidate files found (unchanged ones are done at once)."""
BANK_STAGE = "prompt bank"
"""Ingest's last stage, only when prompts wait for the bank: done/total count those prompts (the bank's
embedding and dedup work, spread over them)."""


def default_lanes() -> int:
    """Two lanes where there are two cores or more (one decodes while the other embeds), else one."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


@dataclass(frozen=True)
class IngestOptions(_AsDict):
    """Tuning knobs. batch_size: images embedded at once (on the CPU, split between the lanes: each lane's forward
    pass takes batch_size / lanes); commit_every: images per table commit; workers: read/decode threads; lanes:
    chunks read and embedded at once (see the module's docstring)."""

    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    batch_size: int = 32
    commit_every: int = 256
    workers: int = max(1, min(4, os.cpu_count() or 1))
    lanes: int = default_lanes()


@dataclass(frozen=True)
class FileRead:
    """A file read and hashed (`read_file`); `pixels` (`ClipEncoder.prepare`'s uint8 array) is set when its
    content must be embedded."""

    found: FoundFile
    image_id: str
    width: int = 0
    height: int = 0
    format: str = ""
    pixels: "np.ndarray | None" = None
    prompt: ImagePrompt | None = None
    embedding: "np.ndarray | None" = None
    """Set by ingest's lanes once `pixels` are embedded (the pixels are then dropped)."""


@dataclass
class _Counts:
    added: int = 0
    skipped_unchanged: int = 0
    duplicates: int = 0
    updated: int = 0
    pruned: int = 0
    failed: list[FileFailure] = field(default_factory=list)
    prompts_found: int = 0
    prompts_from_earlier_runs: int = 0
    prompts_inserted: int = 0
    warnings: list[str] = field(default_factory=list)

    def report(self) -> IngestReport:
        return IngestReport(**{**vars(self), "failed": tuple(self.failed), "warnings": tuple(self.warnings)})


class FolderIngest:
    """One ingest run of `root` into the store's tables. The caller holds the store's write lock."""

    def __init__(
        self,
        db: "lancedb.DBConnection",
        encoder_factory: Callable[[], "ClipEncoder"],
        root: str,
        *,
        exclude: tuple[str, ...] = (),
        options: IngestOptions = IngestOptions(),
        progress: Progress | None = None,
        manifest_prompts: dict[str, str] | None = None,
        prompt_bank: "PromptBank | None" = None,
        source: "LocalFolder | ObjectPrefix | None" = None,
    ):
        self.source = source if source is not None else open_source(root, exclude=exclude)
        self.root = self.source.root
        self.exclude = exclude
        self.options = options
        self.progress = progress or silent
        self.db = db
        self.images = tables.open_images(db)
        self.files = db.open_table(layout.FILES)
        self._encoder_factory = encoder_factory
        self._manifest_prompts = manifest_prompts or {}
        self._prompt_bank = prompt_bank
        self._new_prompt_ids: set[str] = set()  # images embedded by this run that carry a prompt
        self._encoder: ClipEncoder | None = None
        self.counts = _Counts()
        self._pending_images: list[FileRead] = []
        self._pending_files: list[dict[str, Any]] = []
        self._image_rows: list[dict[str, Any]] = []

    @property
    def encoder(self) -> "ClipEncoder":
        if self._encoder is None:
            self._encoder = self._encoder_factory()
        return self._encoder

    def run(self, *, prune: bool = False) -> IngestReport:
        check_source_exists(self.source, prune=prune)
        known_files = {
            row["path"]: row for row in tables.read_columns(self.files, ["path", "size", "mtime_ns", "image_id"]).to_pylist()
        }
        self._stored_ids = set(tables.read_columns(self.images, ["id"]).column("id").to_pylist())
        self._referenced_ids = {row["image_id"] for row in known_files.values()}
        self._known_files = known_files
        self._stale_paths: list[str] = []  # rows that no longer describe what is on disk

        candidates: list[FoundFile] = []
        unreadable_folders: list[str] = []
        for item in self._list():
            if isinstance(item, FoundFile):
                candidates.append(item)
                continue
            self.counts.failed.append(item)
            if item.path in known_files:
                self._stale_paths.append(item.path)  # e.g. a symlink whose target was deleted
            elif item.reason.startswith("cannot read folder"):
                unreadable_folders.append(item.path)
        changed = [found for found in candidates if not self._unchanged(found)]
        done = len(candidates) - len(changed)
        self.counts.skipped_unchanged += done
        self.progress(EMBED_STAGE, done, len(candidates))
        self._ingest_changed(changed, done, len(candidates))

        stale_paths = self._stale_paths
        if prune:
            seen = {found.path for found in candidates} | set(stale_paths)
            gone = [
                path
                for path in known_files
                if self.source.is_under(path)
                and path not in seen
                and not any(self.source.is_under(path, folder) for folder in unreadable_folders)  # may come back
                and not self.source.exists(path)
            ]
            stale_paths.extend(gone)
            self.counts.pruned = len(gone)
        if stale_paths:
            leaving: dict[str, list[str]] = {}
            for path in stale_paths:
                leaving.setdefault(known_files[path]["image_id"], []).append(path)
            first_paths.before_removing(self.db, self.images, leaving)
            tables.delete_where_in(self.files, "path", stale_paths)
        self._drop_unreferenced_images()
        self._catch_up_prompt_bank()
        return self.counts.report()

    def _list(self) -> Iterator[FoundFile | FileFailure]:
        """The source's candidate files and failures, in walk order."""
        return self.source.walk()

    def _ingest_changed(self, changed: list[FoundFile], done: int, total: int) -> None:
        """Read, embed and commit the files that are new or changed (`done` of `total` are done already)."""
        for found, result in self._read_all(changed):
            self._record(found, result)
            if len(self._pending_images) + len(self._pending_files) >= self.options.commit_every:
                self._commit()
            done += 1
            self.progress(EMBED_STAGE, done, total)
        self._commit()

    def _record(self, found: FoundFile, result: "FileRead | FileFailure") -> None:
        """One file's outcome, in walk order: a failure (a stored path that now fails loses its row) or a read."""
        if isinstance(result, FileFailure):
            self.counts.failed.append(result)
            if found.path in self._known_files:
                self._stale_paths.append(found.path)
        else:
            self._accept(result)

    def _unchanged(self, found: FoundFile) -> bool:
        row = self._known_files.get(found.path)
        return row is not None and row["size"] == found.size and row["mtime_ns"] == found.mtime_ns

    def _read_all(self, changed: list[FoundFile]) -> Iterator[tuple[FoundFile, "FileRead | FileFailure"]]:
        """Read, hash, decode and embed files in lanes (see the module's docstring), yielding results in order.

        Each chunk (a batch's worth of files) is read by the worker threads, then its new content is embedded
        by the lane; one more chunk than there are lanes is queued, so a lane starts its next chunk while the
        caller accepts and commits. Reads embedded here carry their `embedding`.
        """
        import numpy as np

        from clipstore.encoders.clip import limit_torch_threads, torch_threads

        lanes = max(1, self.options.lanes)
        concurrent = lanes > 1 and self.encoder.device == "cpu"
        # On the CPU the batch is shared between the lanes: two one-thread forward passes of 16 images run at the
        # two-thread rate of 32, where two of 32 each lose ~7% and of 64 ~25% (their activations outgrow the caches).
        chunk = max(1, self.options.batch_size // lanes if concurrent else self.options.batch_size)
        threads = torch_threads()
        reads = ThreadPoolExecutor(max_workers=self.options.workers, thread_name_prefix="clipstore-read")
        lane_pool = ThreadPoolExecutor(
            max_workers=lanes,
            thread_name_prefix="clipstore-lane",
            initializer=limit_torch_threads if concurrent else None,
            initargs=(max(1, threads // lanes),) if concurrent else (),
        )

        def read_and_embed(files: list[FoundFile]) -> list["FileRead | FileFailure"]:
            results = list(reads.map(self._read_one, files))
            new = [i for i, result in enumerate(results) if isinstance(result, FileRead) and result.pixels is not None]
            if new:
                vectors = self.encoder.encode_prepared([results[i].pixels for i in new], concurrent=concurrent)
                for i, vector in zip(new, np.asarray(vectors)):
                    results[i] = replace(results[i], pixels=None, embedding=vector)
            return results

        queued: deque[tuple[list[FoundFile], Future]] = deque()
        starts = iter(range(0, len(changed), chunk))
        try:
            while True:
                for start in starts:
                    files = changed[start : start + chunk]
                    queued.append((files, lane_pool.submit(read_and_embed, files)))
                    if len(queued) > lanes:
                        break
                if not queued:
                    return
                files, future = queued.popleft()
                yield from zip(files, future.result())
        finally:
            # On Ctrl-C or an error, drop queued chunks instead of reading them first.
            lane_pool.shutdown(wait=True, cancel_futures=True)
            reads.shutdown(wait=True, cancel_futures=True)
            if concurrent:
                limit_torch_threads(threads)  # MKL's thread count is process-wide: back to this thread's

    def _read_one(self, found: FoundFile) -> "FileRead | FileFailure":
        return read_file(
            self.source,
            found,
            stored_ids=self._stored_ids,
            max_megapixels=self.options.max_megapixels,
            min_side=self.encoder.decode_min_side,
            prepare=self.encoder.prepare,
            manifest_prompts=self._manifest_prompts,
        )

    def _accept(self, read: FileRead) -> None:
        previous = self._known_files.get(read.found.path)
        is_new_content = read.image_id not in self._stored_ids
        if is_new_content:
            self._pending_images.append(read)
            self._stored_ids.add(read.image_id)
            if read.prompt is not None:
                self.counts.prompts_found += 1
                self._new_prompt_ids.add(read.image_id)
        if previous is not None and previous["image_id"] == read.image_id:
            self.counts.skipped_unchanged += 1  # touched, same bytes: only size/mtime are refreshed
        elif previous is not None:
            self.counts.updated += 1  # new content for a known path (embedded now, or already stored)
        elif is_new_content or read.image_id not in self._referenced_ids:
            self.counts.added += 1  # new content, or embedded by an earlier run that stopped before linking it
        else:
            self.counts.duplicates += 1
        self._referenced_ids.add(read.image_id)
        self._pending_files.append(file_row(read.found, read.image_id, tables.utc_now()))
        if len(self._pending_images) >= self.options.batch_size:
            self._embed_pending()

    def _embed_pending(self) -> None:
        if not self._pending_images:
            return
        batch, self._pending_images = self._pending_images, []
        waiting = [read for read in batch if read.embedding is None]
        computed = iter(self.encoder.encode_prepared([read.pixels for read in waiting]) if waiting else ())
        now = tables.utc_now()
        self._image_rows.extend(
            image_row(read, read.embedding if read.embedding is not None else next(computed), now) for read in batch
        )

    def _commit(self) -> None:
        """Write pending rows: image rows first, then the file rows that reference them (both upserts), keeping
        each image's `first_path` (see `commit_rows` for the order that survives a kill)."""
        import pyarrow as pa

        self._embed_pending()

        def write_images(gained: dict[str, list[str]]) -> None:
            if self._image_rows:
                for row in self._image_rows:
                    row[layout.FIRST_PATH] = first_paths.first_of(gained.pop(row["id"], ()))
                rows = pa.Table.from_pylist(self._image_rows, schema=self.images.schema)
                self.images.merge_insert("id").when_not_matched_insert_all().execute(rows)
                self._image_rows = []

        commit_rows(self.db, self.images, self.files, self._known_files, self._pending_files, write_images)
        self._pending_files = []

    def _catch_up_prompt_bank(self) -> None:
        """Offer the bank every stored prompt it has not been offered yet, then mark those image rows offered.

        That is this run's new prompts and any an earlier run left behind (killed, crashed, or the bank update
        failed). They go through the bank's one gate in walk order of their images' paths, so the outcome does
        not depend on where an earlier run stopped. The bank is written before the marks: a run stopped between
        the two offers the same prompts again next time and the gate refuses them as exact repeats.
        """
        if self._prompt_bank is None:
            return
        if layout.PROMPT_OFFERED not in self.images.schema.names:  # opened with apply_migrations=False
            if self._new_prompt_ids:
                self.counts.warnings.append(
                    f"{len(self._new_prompt_ids)} prompts found in images were not offered to the prompt bank: the "
                    "store's migration 0005 is pending. Run `clipstore migrate`; the next ingest offers them."
                )
            return
        pending = self._in_walk_order(
            tables.read_columns(
                self.images,
                ["id", "prompt", "prompt_source"],
                where=f"prompt IS NOT NULL AND {layout.PROMPT_OFFERED} IS NOT TRUE",
            ).to_pylist()
        )
        if not pending:
            return
        self.counts.prompts_from_earlier_runs = sum(row["id"] not in self._new_prompt_ids for row in pending)
        total = len(pending)
        self.progress(BANK_STAGE, 0, total)
        try:
            report = self._prompt_bank.add(
                [row["prompt"] for row in pending],
                [f"image:{row['prompt_source']}" for row in pending],
                progress=lambda stage, done, work: self.progress(BANK_STAGE, total * done // max(work, 1), total),
            )
        except ClipstoreError as exc:
            # The images and their prompts are stored and stay unmarked: the next ingest offers them again.
            self.counts.warnings.append(
                f"{total} prompts found in images were not added to the prompt bank: {str(exc).rstrip('.')}. They "
                "stay on their images, and the next ingest offers them to the bank again."
            )
            return
        tables.update_where_in(self.images, "id", [row["id"] for row in pending], {layout.PROMPT_OFFERED: True})
        self.counts.prompts_inserted = report.inserted
        self.progress(BANK_STAGE, total, total)

    def _in_walk_order(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Image rows sorted as a walk meets their first path (folders depth-first, names sorted), then by id."""
        wanted = {row["id"] for row in rows}
        first_path: dict[str, list[str]] = {}
        for row in tables.read_columns(self.files, ["path", "image_id"]).to_pylist():
            if row["image_id"] in wanted:
                parts = row["path"].split(os.sep)
                if row["image_id"] not in first_path or parts < first_path[row["image_id"]]:
                    first_path[row["image_id"]] = parts
        return sorted(rows, key=lambda row: (row["id"] not in first_path, first_path.get(row["id"], []), row["id"]))

    def _drop_unreferenced_images(self) -> None:
        """Delete image rows no file points at any more (content that changed, pruned files, crashed runs)."""
        referenced = set(tables.read_columns(self.files, ["image_id"]).column("image_id").to_pylist())
        stored = set(tables.read_columns(self.images, ["id"]).column("id").to_pylist())
        orphans = stored - referenced
        if orphans:
            tables.delete_where_in(self.images, "id", orphans)


def read_file(
    source: "LocalFolder | ObjectPrefix",
    found: FoundFile,
    *,
    stored_ids: Container[str],
    max_megapixels: float,
    min_side: int,
    prepare: Callable[[Any], "np.ndarray"],
    manifest_prompts: Mapping[str, str],
) -> "FileRead | FileFailure":
    """Read and SHA-256 one file; content not in `stored_ids` is also decoded with the guarded decoder (reduced
    to `min_side`, at most `max_megapixels`), turned into model input pixels by `prepare`, and given its prompt.
    A file that cannot be read or decoded is a `FileFailure` with the reason. Thread-safe."""
    try:
        data, found = source.read(found)  # size and mtime of the bytes actually read
    except OSError as exc:
        return FileFailure(found.path, f"cannot read file: {exc.strerror or exc}")
    image_id = hashlib.sha256(data).hexdigest()
    if image_id in stored_ids:
        return FileRead(found, image_id)  # content already embedded: no need to decode
    try:
        decoded = decode_image(data, max_megapixels=max_megapixels, min_side=min_side)
    except InvalidImageError as exc:
        return FileFailure(found.path, str(exc))
    prompt = _prompt_for(source, found.path, data, manifest_prompts)
    return FileRead(found, image_id, decoded.width, decoded.height, decoded.format, prepare(decoded.image), prompt)


def _prompt_for(source, path: str, data: bytes, manifest_prompts: Mapping[str, str]) -> ImagePrompt | None:
    """An explicit manifest entry first, then what the file itself says, then a sidecar caption."""
    if path in manifest_prompts:
        return ImagePrompt(manifest_prompts[path], "manifest")
    return prompt_from_image_bytes(data) or source.sidecar_prompt(path)


def image_row(read: FileRead, vector: "np.ndarray", added_at, first_path: str | None = None) -> dict[str, Any]:
    """The images-table row of newly embedded content (`first_path` as known so far; writers keep it)."""
    return {
        "id": read.image_id,
        "width": read.width,
        "height": read.height,
        "format": read.format,
        "embedding": vector,
        "added_at": added_at,
        "prompt": read.prompt.text if read.prompt else None,
        "prompt_source": read.prompt.source if read.prompt else None,
        layout.FIRST_PATH: first_path,
    }


def file_row(found: FoundFile, image_id: str, ingested_at) -> dict[str, Any]:
    """The files-table row of a path holding the content `image_id`."""
    return {"path": found.path, "size": found.size, "mtime_ns": found.mtime_ns, "image_id": image_id, "ingested_at": ingested_at}


def commit_rows(
    db: "lancedb.DBConnection",
    images: "lancedb.table.Table",
    files: "lancedb.table.Table",
    known_files: Mapping[str, Mapping[str, Any]],
    file_rows: list[dict[str, Any]],
    write_images: Callable[[dict[str, list[str]]], None],
) -> None:
    """Commit new image rows and the file rows that point at them, in the order that leaves a consistent store
    wherever a process is killed:

    1. `write_images(gained)`: the new image rows (gained: {image id: paths this commit gives it}; it pops the
       ids whose rows it wrote with their first path). Unreferenced until step 3, so a reader never reaches them,
       and the next run links them instead of embedding again (or drops them when nothing links them);
    2. the images losing paths to other content get the first of the paths they keep (`first_paths`);
    3. the file rows, one upsert on `path`;
    4. the images that gained paths get their first path from the stored paths.
    `known_files`: the files table's rows as the run found them ({path: row}).
    """
    import pyarrow as pa

    gained: dict[str, list[str]] = {}  # image id -> paths this commit gives it
    leaving: dict[str, list[str]] = {}  # image id -> its paths that now hold other content
    for row in file_rows:
        previous = known_files.get(row["path"])
        if previous is None or previous["image_id"] != row["image_id"]:
            gained.setdefault(row["image_id"], []).append(row["path"])
        if previous is not None and previous["image_id"] != row["image_id"]:
            leaving.setdefault(previous["image_id"], []).append(row["path"])
    write_images(gained)
    first_paths.before_removing(db, images, leaving)
    if file_rows:
        rows = pa.Table.from_pylist(file_rows, schema=files.schema)
        files.merge_insert("path").when_matched_update_all().when_not_matched_insert_all().execute(rows)
    first_paths.after_adding(db, images, gained, leaving)


def read_manifest_records(path: str | os.PathLike[str], what: str = "manifest") -> tuple[str, list]:
    """(the manifest's folder, its records) from a CSV/TSV (header row) or JSONL file."""
    import csv
    import json

    manifest = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isfile(manifest):
        raise SourceNotFoundError(f"Cannot read {what} {manifest}: no such file.")
    with open(manifest, encoding="utf-8", errors="replace", newline="") as handle:
        if manifest.lower().endswith((".jsonl", ".ndjson")):
            records = []
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ManifestError(
                        f"{what.capitalize()} {manifest}, line {number}, column {exc.colno}: not valid JSON ({exc.msg}). "
                        'Each line must be one JSON object, e.g. {"path": "cat.png", "prompt": "a cat"}.'
                    ) from None
        else:
            reader = csv.DictReader(handle, delimiter="\t" if manifest.lower().endswith(".tsv") else ",", strict=True)
            try:
                records = list(reader)
            except csv.Error as exc:  # line_num counts the lines read before the one that failed
                raise ManifestError(
                    f"{what.capitalize()} {manifest}, line {reader.line_num + 1}: not valid CSV/TSV ({exc}). "
                    "The first row names the columns (e.g. path,prompt); quote fields that hold the separator."
                ) from None
    return os.path.dirname(manifest), records


def read_prompt_manifest(path: str | os.PathLike[str]) -> dict[str, str]:
    """{absolute image path: prompt} from a CSV/TSV (columns path and prompt) or JSONL manifest.

    Relative paths are relative to the manifest's folder (a render-world manifest.jsonl works as it is); object-store
    URIs (`s3://bucket/photos/a.png`, for images ingested from object storage) are kept as they are.
    """
    base, records = read_manifest_records(path)
    columns = {key for record in records if isinstance(record, dict) for key in record}
    missing = [name for name in ("path", "prompt") if name not in columns]
    if records and missing:
        raise ManifestError(
            f"Manifest {os.path.abspath(os.path.expanduser(os.fspath(path)))} has no {' or '.join(missing)} "
            f"{'column' if len(missing) == 1 else 'columns'} (it has: {', '.join(sorted(map(str, columns))) or 'none'}). "
            "A prompt manifest needs `path` (the image, relative to the manifest) and `prompt`."
        )
    prompts = {}
    for record in records:
        if isinstance(record, dict) and isinstance(record.get("path"), str) and isinstance(record.get("prompt"), str):
            if record["prompt"].strip():
                prompts[_manifest_path(base, record["path"])] = record["prompt"].strip()
    return prompts


def _manifest_path(base: str, path: str) -> str:
    """A manifest's path as ingest names the file: an object-store URI as it is, a local path absolute."""
    if is_uri(path):
        return path
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def check_source(
    folder: str | os.PathLike[str], *, prune: bool = False, storage_options: Mapping[str, str] | None = None
) -> str:
    """Where an ingest source is (an absolute path, or an object-store URI without a trailing `/`);
    SourceNotFoundError when it does not exist (and we are not pruning). `storage_options`: for a source on
    object storage (else the standard environment variables)."""
    source = open_source(folder, storage_options=storage_options)
    check_source_exists(source, prune=prune)
    return source.root
