"""The distributed ingest on a real local Ray cluster (the session's `ray_cluster`: 2 CPUs, 127.0.0.1 only): the
store it makes equals the local ingest's (even when a worker dies mid-run), it is incremental, a driver killed
before or after its commit leaves a consistent store that a re-run completes, and stores and sources on the
local S3 server work."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import clipstore
from clipstore.db import first_paths, fragments, layout, tables
from image_factory import build_messy_folder, pattern_image, write_image

MINI = "clipstore-mini"


@pytest.fixture
def ray_options(ray_cluster):
    from clipstore.ingest.distributed import RayOptions

    # Small batches, so that the folder spreads over many tasks and copies land in different workers' batches.
    return RayOptions(address=ray_cluster, files_per_task=4, rows_per_fragment=4)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Nested folders, odd names, corrupt files, a symlink loop, copies near and far in walk order, prompts from
    PNG text, a sidecar caption and a manifest."""
    from clipstore.world import render_folder

    root = tmp_path / "source"
    build_messy_folder(root)
    render_folder(root / "world", 10, seed=3)
    first_rendered = sorted((root / "world").rglob("*.png"))[0]
    shutil.copy(first_rendered, root / "aaa-early copy.png")  # walked before its original, in another batch
    write_image(root / "aaa" / "captioned.png", pattern_image(50))
    (root / "aaa" / "captioned.txt").write_text("a captioned test pattern\n", encoding="utf-8")
    (root / "zzz").mkdir()
    shutil.copy(root / "photos" / "2021" / "sunset.jpg", root / "zzz" / "late copy.jpg")
    return root


def _snapshot(store) -> dict:
    """What the store holds, model-independent of how it was made (vectors separately)."""
    images = tables.read_columns(
        tables.open_images(store.db), ["id", "width", "height", "format", "prompt", "prompt_source", layout.PROMPT_OFFERED, layout.FIRST_PATH]
    ).to_pylist()
    files = tables.read_columns(store.db.open_table(layout.FILES), ["path", "size", "mtime_ns", "image_id"]).to_pylist()
    return {
        "images": sorted(tuple(sorted(row.items())) for row in images),
        "files": sorted(tuple(sorted(row.items())) for row in files),
        "prompts": [(p.text, p.source) for p in store.list_prompts(limit=10_000)],
    }


def _vectors(store) -> dict[str, np.ndarray]:
    rows = tables.read_columns(tables.open_images(store.db), ["id", "embedding"])
    return dict(zip(rows.column("id").to_pylist(), tables.vector_matrix(rows.column("embedding"))))


def _report(report) -> dict:
    data = report.to_dict()
    data["failed"] = sorted((f["path"], f["reason"]) for f in data["failed"])
    return data


def assert_same_store(made_by_ray, made_locally) -> None:
    assert _snapshot(made_by_ray) == _snapshot(made_locally)
    ray_vectors, local_vectors = _vectors(made_by_ray), _vectors(made_locally)
    assert ray_vectors.keys() == local_vectors.keys()
    cosines = [float(ray_vectors[key] @ local_vectors[key]) for key in local_vectors]
    assert min(cosines) >= 0.999, min(cosines)  # bf16 on CPUs that have it: batch composition moves the last digits
    assert first_paths.check(made_by_ray.db, tables.open_images(made_by_ray.db)) == {}


def _unreferenced_files(store) -> int:
    """Data files of the images table no version names (what `gc` would remove), counted without removing."""
    dataset = tables.open_images(store.db).to_lance()
    named = {data_file.path for version in dataset.versions() for fragment in dataset.checkout_version(version["version"]).get_fragments() for data_file in fragment.metadata.files}
    on_disk = set(os.listdir(os.path.join(dataset.uri, "data")))
    return len(on_disk - named)


@pytest.mark.slow  # a Ray pipeline starts workers that load the model (seconds)
def test_ray_ingest_makes_the_store_the_local_ingest_makes_even_when_a_worker_dies(tmp_path, source, ray_options, monkeypatch):
    from clipstore.ingest.distributed import CRASH_WORKER_ENV

    manifest = source / "world" / "manifest.jsonl"
    local = clipstore.connect(tmp_path / "local.clipstore", model=MINI)
    expected = local.ingest(source, manifest=manifest)
    distributed = clipstore.connect(tmp_path / "ray.clipstore", model=MINI)
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_WORKER_ENV, str(marker))  # the first embed worker kills its own process mid-run
    report = distributed.ingest(source, manifest=manifest, engine="ray", ray=ray_options)
    assert marker.exists()  # a worker did die: Ray restarted it and ran its batch again
    monkeypatch.delenv(CRASH_WORKER_ENV)

    assert _report(report) == _report(expected)
    assert report.added >= 20 and report.duplicates == 3 and len(report.failed) == 3 and report.prompts_found >= 11
    assert_same_store(distributed, local)
    assert any(row[0] == "a captioned test pattern" for row in _snapshot(distributed)["prompts"])
    assert _unreferenced_files(distributed) == 0  # nothing left behind, not even the dead worker's fragments
    assert fragments.interrupted_table(distributed.db) is None
    hits = distributed.search_image(source / "aaa" / "captioned.png", k=1)
    assert hits[0].path == str(source / "aaa" / "captioned.png") and hits[0].score > 0.99

    # Incremental: nothing is read again; then changes are handled as the local ingest handles them.
    again = distributed.ingest(source, engine="ray", ray=ray_options)
    assert (again.added, again.updated, again.duplicates, again.skipped_unchanged) == (0, 0, 0, expected.added + expected.duplicates)
    write_image(source / "photos" / "2021" / "beach.png", pattern_image(77))  # new bytes under a known path
    shutil.copy(source / "aaa" / "captioned.png", source / "photos" / "captioned again.png")  # a new copy
    os.remove(source / "été" / "ümlaut-猫.png")
    for store, engine in ((local, "local"), (distributed, "ray")):
        changed = store.ingest(source, prune=True, engine=engine, ray=ray_options)
        assert (changed.updated, changed.duplicates, changed.pruned) == (1, 1, 1), engine
    assert_same_store(distributed, local)


_DRIVER = textwrap.dedent(
    """
    import sys
    import clipstore
    from clipstore.ingest.distributed import RayOptions

    store = clipstore.connect(sys.argv[1])
    store.ingest(sys.argv[2], engine="ray", ray=RayOptions(address=sys.argv[3], files_per_task=4, rows_per_fragment=4))
    """
)


def _killed_driver(store_path: Path, source: Path, address: str, point: str) -> None:
    """Ingest in a child process that SIGKILLs itself at `point` of its commit."""
    from clipstore.ingest.distributed import KILL_AT_ENV

    env = {**os.environ, KILL_AT_ENV: point, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    child = subprocess.run(  # cwd: not the checkout, whose source tree would shadow the installed package
        [sys.executable, "-c", _DRIVER, str(store_path), str(source), address], env=env, capture_output=True, text=True,
        timeout=300, cwd=store_path.parent,
    )
    assert child.returncode == -9, child.stderr[-3000:]


@pytest.mark.slow  # a Ray pipeline starts workers that load the model (seconds)
def test_a_driver_killed_before_its_commit_leaves_the_store_unchanged(tmp_path, source, ray_cluster, ray_options):
    source = source / "photos"
    store = clipstore.connect(tmp_path / "ray.clipstore", model=MINI)
    store.ingest(source / "2021")  # something already there
    before = _snapshot(store)
    versions = {name: store.db.open_table(name).version for name in (layout.IMAGES, layout.FILES)}

    _killed_driver(tmp_path / "ray.clipstore", source, ray_cluster, "before-commit")
    assert _snapshot(store) == before
    assert {name: store.db.open_table(name).version for name in versions} == versions  # not one commit
    assert _unreferenced_files(store) > 0  # the workers' fragments, never committed
    assert fragments.interrupted_table(store.db) == layout.IMAGES

    report = store.ingest(source, engine="ray", ray=ray_options)  # cleans up, then does the whole job
    assert _unreferenced_files(store) == 0 and fragments.interrupted_table(store.db) is None
    local = clipstore.connect(tmp_path / "local.clipstore", model=MINI)
    local.ingest(source / "2021")
    assert _report(report) == _report(local.ingest(source))
    assert_same_store(store, local)


@pytest.mark.slow  # a Ray pipeline starts workers that load the model (seconds)
def test_a_driver_killed_after_its_commit_leaves_a_consistent_store_that_a_rerun_completes(tmp_path, source, ray_cluster, ray_options):
    source = source / "photos"
    store = clipstore.connect(tmp_path / "ray.clipstore", model=MINI)
    _killed_driver(tmp_path / "ray.clipstore", source, ray_cluster, "after-images")  # between the two commits

    images = tables.read_columns(tables.open_images(store.db), ["id", layout.FIRST_PATH]).to_pylist()
    assert images  # the images' one commit landed
    files = tables.read_columns(store.db.open_table(layout.FILES), ["path", "image_id"]).to_pylist()
    assert files == []  # the files' commit did not
    # Consistent: every file row points at an image row, and every first path holds that image's bytes.
    assert {row["image_id"] for row in files} <= {row["id"] for row in images}
    for row in images:
        if row[layout.FIRST_PATH] is not None:
            assert hashlib.sha256(Path(row[layout.FIRST_PATH]).read_bytes()).hexdigest() == row["id"]
    assert store.search_image(source / "2021" / "beach.png", k=1) == []  # searches work, and show no unlinked row

    store.ingest(source, engine="ray", ray=ray_options)
    local = clipstore.connect(tmp_path / "local.clipstore", model=MINI)
    local.ingest(source)
    assert_same_store(store, local)


@pytest.mark.slow  # a Ray pipeline starts workers that load the model (seconds)
def test_a_store_on_object_storage_and_images_from_an_s3_prefix(tmp_path, source, s3, ray_options, monkeypatch):
    import boto3

    from object_storage import ACCESS_KEY, REGION, SECRET_KEY

    # A local folder into an s3:// store.
    remote = clipstore.connect(s3.uri("ray"), storage_options=s3.storage_options, model=MINI)
    report = remote.ingest(source / "photos", engine="ray", ray=ray_options)
    local = clipstore.connect(tmp_path / "local.clipstore", model=MINI)
    assert _report(report) == _report(local.ingest(source / "photos"))
    assert_same_store(remote, local)
    assert remote.gc().files_removed == 0  # the run cleaned up after itself

    # Images read from an s3:// prefix (the standard AWS variables), into a local store: same ids as the files.
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)
    prefix = s3.uri("photos").split("/", 3)[3]
    folder = source / "photos"
    uploaded = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and "loop" not in path.parts:
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            client.upload_file(str(path), s3.bucket, key)
            uploaded[f"s3://{s3.bucket}/{key}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    uri = f"s3://{s3.bucket}/{prefix}"
    from_s3 = clipstore.connect(tmp_path / "from-s3.clipstore", model=MINI)
    report = from_s3.ingest(uri, engine="ray", ray=ray_options)
    stored = {row["path"]: row["image_id"] for row in tables.read_columns(from_s3.db.open_table(layout.FILES), ["path", "image_id"]).to_pylist()}
    assert stored == uploaded and report.added + report.duplicates == len(uploaded)
    local_s3 = clipstore.connect(tmp_path / "local-from-s3.clipstore", model=MINI)
    assert _report(local_s3.ingest(uri)) == _report(report)  # the local engine reads s3:// prefixes too
    assert_same_store(from_s3, local_s3)
    assert from_s3.ingest(uri, engine="ray", ray=ray_options).skipped_unchanged == len(uploaded)


def test_without_ray_installed_the_error_says_what_to_install(tmp_path, photo_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    store = clipstore.connect(tmp_path / "s.clipstore", model=MINI)
    with pytest.raises(clipstore.DistributedError, match=r"pip install 'clipstore\[distributed\]'"):
        store.ingest(photo_folder, engine="ray")
    assert store.count_files() == 0



def test_the_embed_stage_runs_one_lane_worker_per_machine_on_cpus_and_one_worker_per_gpu():
    from clipstore.ingest.distributed import WorkerShape, worker_shape

    # A 2-core machine: one actor embedding on both cores in two lanes, a read task beside it (half a CPU each,
    # so reads are not fused into the actor and decode while it embeds).
    assert worker_shape(None, gpus=0, cpu_nodes=[2]) == WorkerShape(workers=1, worker_cpus=1.5, torch_threads=2, lanes=2, read_cpus=0.5)
    # Three nodes (a head without CPUs is not one): one actor each, sized for the smallest; an eighth of the
    # cores (two read tasks here) left for reads.
    assert worker_shape(None, gpus=0, cpu_nodes=[0, 16, 8, 8]) == WorkerShape(3, 7.0, 8, 2, 0.5)
    assert worker_shape(None, gpus=0, cpu_nodes=[32]) == WorkerShape(1, 28.0, 32, 2, 0.5)
    # Asked for: an equal share of all cores each; a one-core share runs one lane.
    assert worker_shape(2, gpus=0, cpu_nodes=[2]) == WorkerShape(2, 0.5, 1, 1, 0.5)
    assert worker_shape(4, gpus=0, cpu_nodes=[16]) == WorkerShape(4, 3.5, 4, 2, 0.5)
    assert worker_shape(None, gpus=0, cpu_nodes=[1]) == WorkerShape(1, 0.5, 1, 1, 0.5)
    # GPUs: one actor per GPU with torch's own threads, reads on one CPU each.
    assert worker_shape(None, gpus=4, cpu_nodes=[32]) == WorkerShape(4, 0, 0, 1, 1)
    assert worker_shape(2, gpus=4, cpu_nodes=[32]) == WorkerShape(2, 0, 0, 1, 1)
