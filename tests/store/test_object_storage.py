"""A store on object storage (`clipstore.connect("s3://bucket/store", storage_options=...)`, `--store s3://...`),
against a real local S3 server: ingest, search, the prompt bank, describe, a trained head, a fresh CLI process
configured by the AWS environment variables or --storage-option, concurrent writers, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import clipstore
from image_factory import pattern_image, write_image
from mini_model import DEFAULT_MINI

MINI = "clipstore-mini"
PROMPTS = ["a photo of stripes", "a checkered pattern", "a plain grey square"]


def _cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`clipstore ARGS` in a fresh interpreter, with no AWS_* variable but those of `env`."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "clipstore.cli", *args], cwd=cwd, env={**base, **(env or {})},
        capture_output=True, text=True, timeout=300,
    )


def test_a_store_on_s3_ingests_searches_keeps_prompts_and_describes(s3, photo_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = s3.uri()
    store = clipstore.connect(uri, storage_options=s3.storage_options, model=MINI)
    assert store.path == uri and store.location.remote
    assert store.ingest(photo_folder).added == 6
    image = photo_folder / "a" / "img1.png"
    hits = store.search_image(image, k=3)
    assert hits[0].path == str(image) and hits[0].score > 0.99  # paths stay local image paths
    assert {hit.path for hit in store.search_text("a pattern", k=6)} == {str(p) for p in photo_folder.rglob("*.png")}
    assert store.add_prompts(PROMPTS).inserted == 3
    assert store.search_prompts("stripes", k=1)[0].text == "a photo of stripes"
    description = store.describe(image)
    assert description.method == "model_b" and description.text in PROMPTS

    reopened = clipstore.connect(uri, storage_options=s3.storage_options)
    info = reopened.info()
    assert (info.path, info.images, info.files, info.prompts) == (uri, 6, 6, 3)
    assert reopened.search_image(image, k=1)[0].path == str(image)
    keys = s3.keys(uri)
    assert any(key.startswith("images.lance/") for key in keys) and any(key.startswith("prompts.lance/") for key in keys)
    assert any(key.startswith("_clipstore_write_lease.lance/") for key in keys)  # writes took the lease
    assert list(tmp_path.iterdir()) == [photo_folder]  # nothing local (no "s3:" folder), no lock file


def test_a_model_saved_in_a_store_on_s3_is_listed_resolved_and_loaded_from_a_local_copy(s3):
    import torch

    from clipstore.encoders.identity import file_sha256
    from clipstore.finetune.registry import resolve_target, save_model

    store = clipstore.connect(s3.uri(), storage_options=s3.storage_options, model=MINI)
    config = {"id": "20240101-120000-aaaaaa", "parent": store.model.portable(store.path).to_dict(),
              "method": "mcip", "text_encoder_changed": False, "created_at": "2024-01-01T12:00:00"}
    folder = save_model(store.context, torch.nn.Linear(2, 2), config["id"], config)
    assert folder == f"{store.path}/models/20240101-120000-aaaaaa"
    assert [model["folder"] for model in store.finetuned_models()] == [folder]
    identity, text_changed = resolve_target(store.context, "20240101-12")
    assert identity.checkpoint_path == f"{folder}/model.safetensors" and not text_changed
    assert identity.portable(store.path).checkpoint_path == "models/20240101-120000-aaaaaa/model.safetensors"
    local = store.context.loadable(identity)
    assert os.path.isfile(local.checkpoint_path) and file_sha256(local.checkpoint_path) == identity.checkpoint_sha256


@pytest.mark.slow
def test_a_head_trained_on_s3_is_saved_there_and_used_by_a_fresh_connection(s3, tmp_path):
    from clipstore.world import render_folder

    render_folder(tmp_path / "world", 60, seed=3)
    uri = s3.uri()
    store = clipstore.connect(uri, storage_options=s3.storage_options, model=MINI)
    assert store.ingest(tmp_path / "world").prompts_found == 60
    report = store.train(epochs=3, freeze_vision=True, views=1, patience=2)
    assert report.folder == f"{uri}/heads/{report.head_id}"
    assert {f"heads/{report.head_id}/config.json", f"heads/{report.head_id}/model_a.safetensors"} <= set(s3.keys(uri))

    fresh = clipstore.connect(uri, storage_options=s3.storage_options)
    assert [head.id for head in fresh.heads()] == [report.head_id]
    description = fresh.describe(next((tmp_path / "world").rglob("*.png")), alpha=0.5)  # Model A's weights read
    assert description.head == report.head_id and description.method == "ensemble"


@pytest.mark.slow
def test_a_model_fine_tuned_on_s3_is_switched_to_loaded_from_the_store_and_rolled_back(s3, tmp_path):
    from clipstore.world import render_folder

    render_folder(tmp_path / "world", 40, seed=8)
    uri = s3.uri()
    store = clipstore.connect(uri, storage_options=s3.storage_options, model=DEFAULT_MINI)
    base = store.model
    store.ingest(tmp_path / "world")
    report = store.finetune(epochs=1, batch_size=16, augment=False, labels_from_folders=True, apply=True, force=True)
    assert report.folder == f"{uri}/models/{report.model_id}" and report.switch.switched
    assert f"models/{report.model_id}/model.safetensors" in s3.keys(uri)

    fresh = clipstore.connect(uri, storage_options=s3.storage_options)  # finds its model under the URI
    assert fresh.model.checkpoint_path == f"{uri}/models/{report.model_id}/model.safetensors"
    assert not fresh.model.same_vectors_as(base)
    image = next((tmp_path / "world").rglob("*.png"))
    hit = fresh.search_image(image, k=1)[0]  # embedded by the fine-tuned model, loaded from its local copy
    assert hit.path == str(image) and hit.score > 0.99
    fresh.rollback()
    assert clipstore.connect(uri, storage_options=s3.storage_options).model.same_vectors_as(base)


@pytest.mark.slow
def test_a_fresh_cli_process_reads_the_store_with_aws_variables_or_storage_options(s3, photo_folder, tmp_path):
    uri = s3.uri()
    store = clipstore.connect(uri, storage_options=s3.storage_options, model=MINI)
    store.ingest(photo_folder)
    store.add_prompts(PROMPTS)

    by_env = _cli(["info", "--json", "--store", uri], tmp_path, s3.env)
    assert by_env.returncode == 0, by_env.stderr
    info = json.loads(by_env.stdout)
    assert (info["path"], info["images"], info["prompts"], info["index"]) == (uri, 6, 3, None)
    indexed = _cli(["index", "--json", "--store", uri], tmp_path, s3.env)
    assert indexed.returncode == 0, indexed.stderr
    assert json.loads(indexed.stdout)["rows_indexed"] == 6

    options = [arg for key, value in s3.storage_options.items() for arg in ("--storage-option", f"{key}={value}")]
    image = photo_folder / "b" / "img0.png"
    by_options = _cli(["similar", str(image), "-k", "1", "--json", "--store", uri, *options], tmp_path)
    assert by_options.returncode == 0, by_options.stderr
    assert json.loads(by_options.stdout)["hits"][0]["path"] == str(image)  # through the vector index
    prompts = _cli(["prompts", "search", "grey", "-k", "1", "--store", uri, *options], tmp_path)
    assert prompts.returncode == 0 and "a plain grey square" in prompts.stdout
    assert list(tmp_path.iterdir()) == [photo_folder]


@pytest.mark.slow
def test_ingests_wait_for_the_write_lease_then_both_finish_without_duplicates(s3, tmp_path):
    """While this test holds the store's write lease, two `clipstore ingest` processes say they wait; once it is
    freed they race for it and both finish, every file stored once."""
    import queue
    import threading

    from clipstore.db.locking import write_lock

    for side in ("left", "right"):
        for seed in range(6):
            write_image(tmp_path / side / f"{side}{seed}.png", pattern_image(seed + (0 if side == "left" else 50)))
    uri = s3.uri()
    store = clipstore.connect(uri, storage_options=s3.storage_options, model=MINI)
    base = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    lines: queue.Queue = queue.Queue()
    with write_lock(store.location):
        ingests = [
            subprocess.Popen(
                [sys.executable, "-m", "clipstore.cli", "ingest", str(tmp_path / side), "--store", uri, "--json", "--quiet"],
                cwd=tmp_path, env={**base, **s3.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for side in ("left", "right")
        ]
        for process in ingests:
            threading.Thread(target=lambda p=process: lines.put(p.stderr.readline()), daemon=True).start()
        waiting = [lines.get(timeout=240) for _ in ingests]
    assert all(line.startswith(f"Another clipstore process is writing to {uri}; waiting") for line in waiting), waiting
    outputs = [process.communicate(timeout=300) for process in ingests]
    assert [process.returncode for process in ingests] == [0, 0], [err for _, err in outputs]
    assert [json.loads(out)["added"] for out, _ in outputs] == [6, 6]
    paths = store.db.open_table("files").to_arrow().column("path").to_pylist()
    assert sorted(paths) == sorted(str(p) for p in tmp_path.rglob("*.png"))  # every file once, no duplicate row
    assert store.count_images() == 12


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["missing bucket", "closed port"])
def test_storage_problems_are_one_error_line_from_the_cli(s3, tmp_path, problem):
    from object_storage import closed_port

    env = dict(s3.env)
    uri = s3.uri()
    if problem == "missing bucket":
        uri = f"s3://no-such-bucket-{os.getpid()}/store"
        expected = f"Error: The bucket of {uri} does not exist"
    else:
        env["AWS_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
        expected = f"Error: Cannot reach the object storage of {uri}"
    for args in (["info", "--store", uri], ["ingest", str(tmp_path), "--store", uri, "--model", MINI]):
        result = _cli(args, tmp_path, env)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith(expected) and len(result.stderr.strip().splitlines()) == 1, result.stderr
