"""Shared fixtures: real LanceDB stores on tmp_path, the real clipstore-mini open_clip model, real MiniLM."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Model hubs are unreachable in CI: fail fast instead of retrying downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import clipstore  # noqa: E402
from image_factory import build_messy_folder, pattern_image, write_image  # noqa: E402
from mini_model import DEFAULT_MINI  # noqa: E402

MINI = "clipstore-mini"


@pytest.fixture(scope="session", autouse=True)
def tower_cache(tmp_path_factory) -> Path:
    """The numpy towers this session caches (whenever a test loads a full model) go to a folder of their own,
    never the user's ~/.cache/clipstore; subprocesses inherit it. Tests of the cache itself use their own."""
    path = tmp_path_factory.mktemp("clipstore-cache")
    os.environ["CLIPSTORE_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def s3():
    """A local S3 server (moto, on 127.0.0.1) with one bucket, for the whole session: an `S3Server` (endpoint,
    bucket, `storage_options`, `env`, `uri(name)` for a fresh prefix). Skips when moto is not installed."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed: pip install '.[dev]'")
    from object_storage import start_server

    server, s3 = start_server()
    yield s3
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """A local Ray cluster for the whole session (2 CPUs, 127.0.0.1 only, no dashboard): its address, for
    drivers in child processes. Tests in this process find Ray connected and use it. Skips when the distributed
    extra is not installed."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported (see start_local_ray)
    pytest.importorskip("ray.data", reason="ray[data] is not installed: pip install '.[distributed]'")
    import ray

    from clipstore.ingest.distributed import start_local_ray

    address = start_local_ray(num_cpus=2)
    yield address
    ray.shutdown()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "test.clipstore"


@pytest.fixture
def store(store_path: Path) -> "clipstore.Store":
    return clipstore.connect(store_path, model=MINI)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Six distinct, clean images in two nested folders."""
    root = tmp_path / "photos"
    for seed in range(6):
        write_image(root / ("a" if seed % 2 else "b") / f"img{seed}.png", pattern_image(seed))
    return root


@pytest.fixture
def messy(tmp_path: Path) -> dict:
    return build_messy_folder(tmp_path / "messy")


@pytest.fixture
def world(tmp_path: Path) -> "tuple[clipstore.Store, Path]":
    """A store of 40 rendered world images (labelled by folder) on clipstore-mini: (store, tmp_path); the
    images are under tmp_path / "world". Fine-tuning and switch tests start from it."""
    from clipstore.world import render_folder

    render_folder(tmp_path / "world", 40, seed=8)
    store = clipstore.connect(tmp_path / "s.clipstore", model=MINI)
    store.ingest(tmp_path / "world")
    return store, tmp_path


@pytest.fixture(scope="session")
def switched(tmp_path_factory) -> "tuple[Path, Path, str, str]":
    """A store switched to a model fine-tuned in it (`clipstore finetune --apply --force`: one epoch need not
    improve): (store path, images folder, model id, the command's output). Shared by the whole session (one
    fine-tuning run): tests that change the store use `switched_copy`."""
    from click.testing import CliRunner

    from clipstore.cli import main
    from clipstore.world import render_folder

    root = tmp_path_factory.mktemp("switched")
    render_folder(root / "world", 40, seed=8)
    store = clipstore.connect(root / "s.clipstore", model=DEFAULT_MINI)
    store.ingest(root / "world")
    result = CliRunner().invoke(
        main, ["finetune", "--store", store.path, "--epochs", "1", "--batch-size", "16", "--no-augment", "--labels-from-folders", "--apply", "--force"]
    )
    assert result.exit_code == 0, result.output
    return Path(store.path), root / "world", store.finetuned_models()[0]["id"], result.output


@pytest.fixture
def switched_copy(switched, tmp_path: Path) -> Path:
    """This test's own copy of the `switched` store (tmp_path / "own.clipstore")."""
    import shutil

    path = tmp_path / "own.clipstore"
    shutil.copytree(switched[0], path)
    return path


@pytest.fixture(scope="session")
def noisy_checkpoint(tmp_path_factory) -> Path:
    """A real open_clip checkpoint of the clipstore-mini architecture, outside any store: the bundled weights
    with seeded noise (0.5 x each tensor's std), so its vectors are clearly another model's."""
    import torch
    from safetensors.torch import save_file

    from clipstore.encoders.clip import load_clip_encoder
    from clipstore.encoders.identity import resolve_model

    state = load_clip_encoder(resolve_model(MINI), device="cpu", precision="fp32").model.state_dict()
    generator = torch.Generator().manual_seed(0)
    noisy = {
        name: (value + 0.5 * value.std() * torch.randn(value.shape, generator=generator)).contiguous()
        if value.is_floating_point() and value.numel() > 1 else value.contiguous()
        for name, value in state.items()
    }
    path = tmp_path_factory.mktemp("checkpoints") / "noisy-mini.safetensors"
    save_file(noisy, str(path))
    return path
