"""Ingest on a Ray cluster (`Store.ingest(source, engine="ray")`, `clipstore ingest --ray auto`): many workers, one
store, exactly the store the local ingest makes.

The run is a `FolderIngest` whose middle part is a pipeline of Ray Data stages:

1. **list**: the source's candidate files in walk order. An object-store prefix is listed in shards (one Ray
   task per first-level folder) and merged; a local folder is walked once by the driver (one set of visited
   folders, so symlink loops end and a folder linked twice is walked once, as the local ingest does);
2. **skip unchanged** (driver): files whose path, size and mtime match their `files` row are not read;
3. **read, hash, decode** (Ray tasks, `ingest.run.read_file`): the bytes are read and SHA-256'd; content the
   store already holds is linked, not decoded; new content goes through the guarded decoder and the model's
   resize/crop (`encoders.clip.image_geometry`, no weights needed) and gets its prompt (manifest, image
   metadata, sidecar caption);
4. **embed and write** (a pool of Ray actors, each loading the model once; one GPU each when the cluster has
   GPUs, else one per machine running the local ingest's lanes on its cores (`worker_shape`); bf16 on CPUs
   that have it): one vector per distinct new content in the batch, written as Lance
   fragments of the images table straight from the worker (`db.fragments.write_fragments`), never committed
   by it;
5. **commit** (driver): the file outcomes are taken in walk order and counted as the local ingest counts them;
   image rows whose id the table already holds or that several workers wrote (the same bytes in two batches)
   are left out, keeping the row of the file a walk meets first; then `ingest.run.commit_rows` in its
   kill-safe order: the images in ONE Lance append against the version read (retried on conflict), the first
   paths of images losing paths, the files in one upsert, the first paths of images gaining paths; then what
   every ingest does at its end (stale rows, unreferenced images, the prompt bank through its dedup gate, the
   vector index).

Killed before the images commit, a driver leaves the store as it was, plus fragment files nothing names: the
setting `uncommitted_fragments` says so, and the next ingest (or `clipstore gc`) deletes them. Killed after it,
the store is consistent (image rows nothing links yet are linked by the next run, or dropped), and a re-run
finishes the job. A worker that dies is restarted by Ray and its batch run again.

Ray is imported only here and only when a distributed ingest runs (`pip install 'clipstore[distributed]'`).
"""

from __future__ import annotations

import json
import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from clipstore.db import fragments, layout, tables
from clipstore.errors import DistributedError
from clipstore.ingest.run import EMBED_STAGE, FileRead, FolderIngest, commit_rows, image_row, read_file
from clipstore.ingest.sources import walk_order_key
from clipstore.ingest.walk import FoundFile
from clipstore.prompts.image_prompts import ImagePrompt
from clipstore.results import FileFailure, _AsDict

if TYPE_CHECKING:
    import lancedb
    import numpy as np
    import pyarrow as pa

    from clipstore.db.location import StoreLocation
    from clipstore.encoders.identity import ModelIdentity

KILL_AT_ENV = "CLIPSTORE_KILL_AT"
"""Test hook: the driver SIGKILLs itself at this point of the commit (`before-commit`, `after-images`,
`after-files`), as a crash or an out-of-memory kill would."""
CRASH_WORKER_ENV = "CLIPSTORE_CRASH_EMBED_WORKER_ONCE"
"""Test hook: a file path; the first embed worker to find it absent creates it and kills its own process."""
_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""With this at 0 a Ray node started here takes 127.0.0.1 as its address and every Ray server listens on the
loopback only (Ray's own switch for single-machine clusters)."""


@dataclass(frozen=True)
class RayOptions(_AsDict):
    """Where and how wide a distributed ingest runs.

    address: "auto" (the cluster in RAY_ADDRESS, or one `ray start` runs on this machine; else a new local one),
        "local" (always a new local cluster), or a cluster's address (`ray://head:10001`, `head:6379`).
        A local cluster binds to 127.0.0.1 only and stops when the ingest ends.
    workers: embed actors (default: one per GPU when the cluster has GPUs, else one per machine (node), which
        embeds on all of that machine's cores the way the local ingest does: one copy of the weights, two lanes
        that each run a one-thread-per-core share of the batch, while read tasks beside it read and decode the
        next files). With `workers` set on CPUs, each actor gets an equal share of the cluster's cores.
    num_cpus: CPUs of a new local cluster (default: all of this machine's).
    files_per_task: files one read/decode task takes.
    rows_per_fragment: new images an embed worker gathers into one fragment (embedded `batch_size` at a time):
        larger fragments keep the table's manifest and the one commit small, smaller ones start the first
        embedding sooner (256: the local ingest's commit size; the vector index's update compacts them).
    """

    address: str = "auto"
    workers: int | None = None
    num_cpus: int | None = None
    files_per_task: int = 16
    rows_per_fragment: int = 256


class RayIngest(FolderIngest):
    """A `FolderIngest` whose files are read, decoded and embedded by Ray workers and committed by this driver.
    The caller holds the store's write lock and a Ray connection (`ray_connection`)."""

    def __init__(
        self,
        db: "lancedb.DBConnection",
        root: str,
        *,
        location: "StoreLocation",
        model: "ModelIdentity",
        device: str | None,
        precision: str,
        ray_options: RayOptions = RayOptions(),
        **kwargs: Any,
    ):
        """`root`, `kwargs`: as for `FolderIngest`; `model`: the store's model; `device`, `precision`: the embed
        workers' (default: cuda on GPU workers, else cpu)."""
        super().__init__(db, _no_local_encoder, root, **kwargs)
        self.location = location
        self.model = model
        self.device = device
        self.precision = precision
        self.ray_options = ray_options
        self._storage_options = worker_storage_options(location)
        self._fragments: list[str] = []
        self._fragment_ids: list[list[str]] = []  # each fragment's ids, as its worker reported them
        self._written: dict[str, tuple[int, int, str | None]] = {}  # id -> (order of its file, fragment, first path)

    # --- 1. list ---------------------------------------------------------------------------------------------

    def _list(self) -> Iterator[FoundFile | FileFailure]:
        shards = self.source.shards()
        if len(shards) <= 1:
            return self.source.walk()
        import ray

        listed = ray.data.from_items([{"shard": shard} for shard in shards], override_num_blocks=len(shards))
        rows = listed.flat_map(_list_shard, fn_kwargs={"source": self.source}).take_all()
        items = [FoundFile(row["path"], row["size"], row["mtime_ns"]) if row["reason"] is None else FileFailure(row["path"], row["reason"]) for row in rows]
        return iter(sorted(items, key=lambda item: walk_order_key(item.path, self.root)))

    # --- 3, 4. read, decode, embed, write --------------------------------------------------------------------

    def _ingest_changed(self, changed: list[FoundFile], done: int, total: int) -> None:
        if not changed:
            self._commit()
            return
        import numpy as np
        import ray

        fragments.begin_uncommitted(self.db, self.images.name)
        stored = ray.put(np.array(sorted(self._stored_ids), dtype="S64"))
        manifest = ray.put(dict(self._manifest_prompts))
        gpus = int(ray.cluster_resources().get("GPU", 0))
        shape = worker_shape(self.ray_options.workers, gpus=gpus, cpu_nodes=_cpu_nodes())
        per_task = max(1, self.ray_options.files_per_task)
        work = [{"order": i, "path": f.path, "size": f.size, "mtime_ns": f.mtime_ns} for i, f in enumerate(changed)]
        dataset = ray.data.from_items(work, override_num_blocks=max(1, -(-len(work) // per_task)))
        dataset = dataset.map_batches(
            _read_batch,
            batch_size=per_task,
            batch_format="pyarrow",
            num_cpus=shape.read_cpus,
            fn_kwargs={
                "source": self.source,
                "shared": [stored, manifest],
                "model_json": self.model.to_json(),
                "max_megapixels": self.options.max_megapixels,
            },
        )
        dataset = dataset.map_batches(
            _EmbedAndWrite,
            batch_size=max(self.ray_options.rows_per_fragment, 1),
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=shape.workers),
            num_gpus=1 if gpus else 0,
            num_cpus=shape.worker_cpus,
            fn_constructor_kwargs={
                "model_json": self.model.to_json(),
                "device": self.device or ("cuda" if gpus else "cpu"),
                "precision": self.precision,
                "torch_threads": shape.torch_threads,
                "lanes": shape.lanes,
                "batch_size": self.options.batch_size,
                "table_uri": self.images.uri,
                "schema": self.images.schema,
                "storage_options": self._storage_options,
                "crash_marker": os.environ.get(CRASH_WORKER_ENV),
            },
        )
        with _worker_errors():
            outcomes = self._gather(dataset, done, total)
        for outcome in sorted(outcomes, key=lambda row: row["order"]):
            found = FoundFile(outcome["path"], outcome["size"], outcome["mtime_ns"])
            self._record(found, _outcome(found, outcome))
        self._commit()
        fragments.remove_orphans(self.images.to_lance())  # batches a dead worker wrote before Ray ran them again
        fragments.end_uncommitted(self.db)

    def _gather(self, dataset, done: int, total: int) -> list[dict[str, Any]]:
        """The workers' outputs as they come: the file outcomes (returned), the fragments and the ids each holds
        (kept: for an id several workers wrote, the fragment of the file a walk meets first)."""
        outcomes: list[dict[str, Any]] = []
        for output in dataset.iter_rows():
            files = _from_ipc(output["files"]).to_pylist()
            outcomes += files
            offset = len(self._fragments)
            written = json.loads(output["fragments"])
            self._fragments += written
            self._fragment_ids += [[] for _ in written]
            for image in _from_ipc(output["images"]).to_pylist():
                self._fragment_ids[offset + image["fragment"]].append(image["id"])
                known = self._written.get(image["id"])
                if known is None or image["order"] < known[0]:
                    self._written[image["id"]] = (image["order"], offset + image["fragment"], image["first_path"])
            done += len(files)
            self.progress(EMBED_STAGE, done, total)
        return outcomes

    def _embed_pending(self) -> None:
        self._pending_images = []  # embedded and written by the workers already

    # --- 5. commit -------------------------------------------------------------------------------------------

    def _commit(self) -> None:
        self._pending_images = []

        def write_images(gained: dict[str, list[str]]) -> None:
            if self._fragments:
                _kill_point("before-commit")
                fragments.commit_append(
                    self.images.uri,
                    self._fragments,
                    key="id",
                    keep=lambda image_id, fragment: self._written.get(image_id, (0, -1))[1] == fragment,
                    storage_options=self._storage_options,
                    keys=self._fragment_ids,
                )
                _kill_point("after-images")
            for image_id, (_, _, first_path) in self._written.items():
                if image_id in gained and first_path == min(gained[image_id]):
                    del gained[image_id]  # written with its first path; the others get it after the files

        commit_rows(self.db, self.images, self.files, self._known_files, self._pending_files, write_images)
        self._pending_files = []
        _kill_point("after-files")


@dataclass(frozen=True)
class WorkerShape:
    """How the embed stage is laid out on the cluster.

    workers: embed actors; worker_cpus: the CPUs each reserves; torch_threads: the torch threads each runs
    (0: torch's default, on GPUs); lanes: forward passes each runs at once on CPU, each on its share of the
    threads (the local ingest's lanes); read_cpus: the CPUs a read-and-decode task reserves."""

    workers: int
    worker_cpus: float
    torch_threads: int
    lanes: int
    read_cpus: float


def worker_shape(workers: int | None, *, gpus: int, cpu_nodes: list[int]) -> WorkerShape:
    """The embed stage's layout for a cluster with `gpus` GPUs and CPU nodes of `cpu_nodes` CPUs each.

    GPUs: one actor per GPU (or `workers`), reads as one-CPU tasks. CPUs: one actor per node by default, with a
    thread per core and two lanes: one copy of the weights per machine, not one per core (whole ingests measured
    the two shapes within noise of each other on 2 cores, BENCHMARKS.md; a many-core node would hold a copy per
    core, and in a microbenchmark two processes with a copy each ran the fp32 tower slower than two lanes of one
    process). The actor reserves all but an eighth of its share (at least half a CPU), so read tasks of half a
    CPU run beside it and decode the next files while it embeds, as the local ingest's lanes overlap decoding
    with the forward pass (reservations that differ keep Ray Data from fusing the reads into the actor, where they would wait for
    it; with one-core shares they are equal and each worker reads and decodes its own files on its own core).
    Ray Data spreads the actors over the nodes."""
    if gpus:
        return WorkerShape(workers or gpus, 0, 0, 1, 1)
    nodes = [count for count in cpu_nodes if count > 0] or [1]
    count = workers or len(nodes)
    share = max(1, sum(nodes) // count)
    if workers is None:
        share = min(nodes)  # one actor on each node, whatever their sizes: the smallest fits everywhere
    lanes = 2 if share >= 2 else 1
    # Room for read tasks of half a CPU beside each actor: an eighth of its cores (decoding took ~12% of the
    # work beside a bf16 forward pass, BENCHMARKS.md), at least one task.
    for_reads = max(0.5, share / 8)
    return WorkerShape(count, max(0.5, share - for_reads), share, lanes, 0.5)


def _cpu_nodes() -> list[int]:
    """The CPU count of each live node of the connected cluster."""
    import ray

    return [int(node.get("Resources", {}).get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]


def worker_storage_options(location: "StoreLocation") -> dict[str, str] | None:
    """The storage options workers write the store's fragments with: the store's own, over the object-store
    variables of this process's environment (AWS_*, GOOGLE_*, AZURE_*, as Lance reads them). Resolved where the
    ingest starts, so a worker on another machine (or started before the variables were set) writes where the
    driver commits, never to the provider's default endpoint. None for a local store."""
    if not location.remote:
        return None
    environment = {key.lower(): value for key, value in os.environ.items() if key.startswith(("AWS_", "GOOGLE_", "AZURE_"))}
    return {**environment, **location.storage_options}


# --- the stages' functions, run in Ray workers ----------------------------------------------------------------

_RESULT_FIELDS = (
    ("order", "int64"), ("path", "string"), ("size", "int64"), ("mtime_ns", "int64"), ("image_id", "string"),
    ("failure", "string"), ("width", "int32"), ("height", "int32"), ("format", "string"), ("prompt", "string"),
    ("prompt_source", "string"), ("pixels", "binary"), ("pixel_height", "int32"), ("pixel_width", "int32"),
)


def _result_schema(with_pixels: bool = True) -> "pa.Schema":
    import pyarrow as pa

    fields = [(name, kind) for name, kind in _RESULT_FIELDS if with_pixels or not name.startswith("pixel")]
    return pa.schema([pa.field(name, getattr(pa, kind)()) for name, kind in fields])


def _list_shard(row: dict[str, Any], source) -> list[dict[str, Any]]:
    """One listing shard's candidates and failures, as rows."""
    return [
        {"path": item.path, "size": item.size, "mtime_ns": item.mtime_ns, "reason": None}
        if isinstance(item, FoundFile) else {"path": item.path, "size": 0, "mtime_ns": 0, "reason": item.reason}
        for item in source.walk_shard(row["shard"])
    ]


def _read_batch(batch: "pa.Table", *, source, shared: list, model_json: str, max_megapixels: float) -> "pa.Table":
    """Read, hash and (new content) decode a batch of files: one result row per file, pixels for new content."""
    import pyarrow as pa

    stored, manifest = _shared(shared)
    identity, prepare = _geometry(model_json)
    rows = []
    for work in batch.to_pylist():
        found = FoundFile(work["path"], work["size"], work["mtime_ns"])
        result = read_file(
            source, found, stored_ids=stored, max_megapixels=max_megapixels, min_side=identity.decode_min_side,
            prepare=prepare, manifest_prompts=manifest,
        )
        row: dict[str, Any] = {"order": work["order"], "path": found.path, "size": found.size, "mtime_ns": found.mtime_ns}
        if isinstance(result, FileFailure):
            row["failure"] = result.reason
        else:
            row.update(path=result.found.path, size=result.found.size, mtime_ns=result.found.mtime_ns, image_id=result.image_id)
            if result.pixels is not None:
                row.update(
                    width=result.width, height=result.height, format=result.format,
                    prompt=result.prompt.text if result.prompt else None,
                    prompt_source=result.prompt.source if result.prompt else None,
                    pixels=result.pixels.tobytes(), pixel_height=result.pixels.shape[0], pixel_width=result.pixels.shape[1],
                )
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=_result_schema())


class _EmbedAndWrite:
    """An embed worker: loads the model once, embeds each distinct new content of a batch once, and writes the
    image rows as uncommitted fragments of the images table. Returns one row per batch: the file outcomes, the
    ids written (with the walk order of the file each was embedded from, and its first path in the batch) and
    the fragments' metadata."""

    def __init__(
        self, model_json: str, device: str, precision: str, torch_threads: int, lanes: int, batch_size: int, table_uri: str, schema, storage_options,
        crash_marker,
    ):
        from concurrent.futures import ThreadPoolExecutor

        from clipstore.encoders.clip import limit_torch_threads
        from clipstore.encoders.identity import ModelIdentity
        from clipstore.encoders.torch_tower import load_image_embedder

        if torch_threads:
            limit_torch_threads(torch_threads)
        self.lanes = max(1, lanes) if device == "cpu" else 1
        # The local ingest's lanes: each lane thread runs its forward passes on its share of the cores.
        self._lane_pool = (
            ThreadPoolExecutor(self.lanes, "clipstore-lane", initializer=limit_torch_threads, initargs=(max(1, torch_threads // self.lanes),))
            if self.lanes > 1 else None
        )
        # The vision tower from this machine's tower cache when it is there (no open_clip import, no text tower:
        # a worker starts seconds sooner), else the full model.
        self.encoder = load_image_embedder(ModelIdentity.from_json(model_json), device=device, precision=precision)
        self.batch_size = max(1, batch_size)
        self.table_uri, self.schema, self.storage_options = table_uri, schema, storage_options
        self.crash_marker = crash_marker

    def __call__(self, batch: "pa.Table") -> "pa.Table":
        import numpy as np
        import pyarrow as pa

        self._maybe_crash()
        rows = batch.to_pylist()
        by_id: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            if row["pixels"] is not None:
                by_id.setdefault(row["image_id"], []).append(row)
        firsts = [min(group, key=lambda row: row["order"]) for group in by_id.values()]
        pixels = [np.frombuffer(row["pixels"], np.uint8).reshape(row["pixel_height"], row["pixel_width"], 3) for row in firsts]
        vectors = self._embed(pixels)
        now = tables.utc_now()
        image_rows = []
        for row, vector in zip(firsts, vectors):
            read = FileRead(FoundFile(row["path"], row["size"], row["mtime_ns"]), row["image_id"], row["width"], row["height"], row["format"], None, _prompt(row))
            image_rows.append(image_row(read, vector, now, first_path=min(other["path"] for other in by_id[row["image_id"]])))
        written = fragments.write_fragments(self.table_uri, pa.Table.from_pylist(image_rows, schema=self.schema), self.storage_options)
        ids = pa.table(
            {
                "id": [row["image_id"] for row in firsts],
                "order": pa.array([row["order"] for row in firsts], pa.int64()),
                "first_path": [image["first_path"] for image in image_rows],
                "fragment": pa.array([0] * len(firsts), pa.int64()),  # one fragment per batch (see below)
            }
        )
        if len(written) > 1:  # a batch larger than a fragment file: say which fragment holds which id
            ids = ids.set_column(3, "fragment", pa.array(_fragment_of_rows(written, len(firsts)), pa.int64()))
        files = batch.select([name for name, _ in _RESULT_FIELDS if not name.startswith("pixel")])
        return pa.table({"files": [_to_ipc(files)], "images": [_to_ipc(ids)], "fragments": [json.dumps(written)]})

    def _embed(self, pixels: list["np.ndarray"]) -> list["np.ndarray"]:
        """One vector per image, in order: `batch_size` images per forward pass, split between the lanes."""
        if self._lane_pool is None:
            step = self.batch_size
            return [vector for start in range(0, len(pixels), step) for vector in self.encoder.encode_prepared(pixels[start : start + step])]
        step = max(1, self.batch_size // self.lanes)
        chunks = [pixels[start : start + step] for start in range(0, len(pixels), step)]
        embedded = self._lane_pool.map(lambda chunk: self.encoder.encode_prepared(chunk, concurrent=True), chunks)
        return [vector for vectors in embedded for vector in vectors]

    def _maybe_crash(self) -> None:
        if self.crash_marker and not os.path.exists(self.crash_marker):
            with open(self.crash_marker, "w") as handle:
                handle.write(str(os.getpid()))
            os._exit(1)


def _fragment_of_rows(written: list[str], rows: int) -> list[int]:
    """The fragment index of each of `rows` rows written in order as `written` (JSON metadata)."""
    counts = [json.loads(text)["physical_rows"] for text in written]
    return [index for index, count in enumerate(counts) for _ in range(count)][:rows]


def _prompt(row: Mapping[str, Any]) -> ImagePrompt | None:
    return ImagePrompt(row["prompt"], row["prompt_source"]) if row["prompt"] is not None else None


def _outcome(found: FoundFile, row: Mapping[str, Any]) -> "FileRead | FileFailure":
    """A file's outcome as the local ingest records it (no pixels: the workers embedded them already)."""
    if row["failure"] is not None:
        return FileFailure(found.path, row["failure"])
    return FileRead(found, row["image_id"], row["width"] or 0, row["height"] or 0, row["format"] or "", None, _prompt(row))


class _SortedIds:
    """Membership in a sorted array of hex ids (what every worker holds of the store's ids: 64 bytes each)."""

    def __init__(self, ids: "np.ndarray"):
        self.ids = ids

    def __contains__(self, image_id: object) -> bool:
        import numpy as np

        if not isinstance(image_id, str) or not len(self.ids):
            return False
        key = np.bytes_(image_id.encode())
        at = int(np.searchsorted(self.ids, key))
        return at < len(self.ids) and self.ids[at] == key


_SHARED: dict[str, Any] = {}


def _shared(refs: list) -> tuple[_SortedIds, dict[str, str]]:
    """The store's ids and the manifest's prompts, fetched once per worker process."""
    import ray

    key = "".join(ref.hex() for ref in refs)
    if key not in _SHARED:
        ids, manifest = ray.get(refs)
        _SHARED.clear()
        _SHARED[key] = (_SortedIds(ids), manifest)
    return _SHARED[key]


@lru_cache(maxsize=2)
def _geometry(model_json: str):
    import numpy as np

    from clipstore.encoders.clip import image_geometry
    from clipstore.encoders.identity import ModelIdentity

    identity = ModelIdentity.from_json(model_json)
    geometry = image_geometry(identity)
    return identity, lambda image: np.asarray(geometry(image))


def _to_ipc(table: "pa.Table") -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> "pa.Table":
    import pyarrow as pa

    return pa.ipc.open_stream(data).read_all()


@contextmanager
def _worker_errors() -> Iterator[None]:
    """A worker's failure as the driver reports it: the `ClipstoreError` a worker raised (e.g. a `StorageError`)
    as it is, anything else as one `DistributedError` line. Nothing is committed then; the next ingest removes
    the fragments written so far."""
    from clipstore.errors import ClipstoreError

    try:
        yield
    except ClipstoreError:
        raise
    except Exception as exc:
        import ray.exceptions

        if not isinstance(exc, ray.exceptions.RayError):
            raise
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ClipstoreError):
                raise cause from None
            cause = getattr(cause, "cause", None) or cause.__cause__
        last = next((line for line in reversed(str(exc).strip().splitlines()) if line.strip()), type(exc).__name__)
        raise DistributedError(
            f"The distributed ingest failed in a Ray worker ({' '.join(last.split())[:300]}). Nothing was committed; "
            "run the ingest again (it removes what the workers wrote), or without --ray to see the error here."
        ) from exc


def _no_local_encoder():
    raise AssertionError("a distributed ingest embeds in its Ray workers, never in the driver")


def _kill_point(name: str) -> None:
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# --- the Ray connection ------------------------------------------------------------------------------------------


@contextmanager
def ray_connection(options: RayOptions) -> Iterator[None]:
    """Connect to the Ray cluster `options.address` names (see `RayOptions`) for the duration of the block.

    Inside a process already connected to Ray, that connection is used and left open. A cluster started here
    (address "local", or "auto" with no cluster running) has this machine's CPUs (or `num_cpus`), listens on
    127.0.0.1 only, has no dashboard, and is shut down when the block ends."""
    try:
        import ray  # noqa: F401  (the extra's check: nothing is started yet)
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise DistributedError(
            f"A distributed ingest needs the distributed extra, and Ray Data is not installed ({exc}). Install it: "
            "pip install 'clipstore[distributed]', or leave out --ray to ingest in this process."
        ) from None
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        _quiet_ray_data()
        yield
        return
    address = options.address
    if address == "auto" and not _running_cluster():
        address = "local"
    try:
        if address == "local":
            start_local_ray(options.num_cpus)
        else:
            ray.init(address=address, **_QUIET)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DistributedError(
            f"Cannot reach the Ray cluster at {address!r} ({' '.join(str(exc).split())[:300]}). Check the address "
            "(ray://HEAD:10001, or HEAD:6379 on a cluster node) and that the cluster is up, or use --ray local."
        ) from None
    _quiet_ray_data()
    try:
        yield
    finally:
        ray.shutdown()


def _running_cluster() -> bool:
    """Whether "auto" finds a cluster: RAY_ADDRESS, or the address file `ray start` leaves on this machine."""
    if os.environ.get("RAY_ADDRESS"):
        return True
    temp = os.environ.get("RAY_TMPDIR") or "/tmp/ray"
    return os.path.isfile(os.path.join(temp, "ray_current_cluster"))


_QUIET = {"log_to_driver": False, "logging_level": "WARNING"}


def start_local_ray(num_cpus: int | None = None) -> str:
    """Start a Ray cluster on this machine only (`num_cpus` CPUs, default all): its node takes 127.0.0.1 and
    every Ray server listens on the loopback only, with no dashboard. Returns its address (for other drivers:
    `ray.init(address=...)`, with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in their environment). Stop it with
    `ray.shutdown()`."""
    # Ray's own switch for single-machine clusters, read from the environment by the servers and workers it
    # starts, and in this process from a constant set when ray was imported.
    os.environ[_LOCAL_ONLY_ENV] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    context = ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", include_dashboard=False, **_QUIET)
    _quiet_ray_data()
    return context.address_info["gcs_address"]


def _quiet_ray_data() -> None:
    """No progress bars or execution banners from Ray Data: clipstore reports its own progress."""
    import logging

    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
