"""Fixtures of the `clipstore serve` tests: real stores, the app through Starlette's ASGI test client, and a real
uvicorn server on 127.0.0.1 (a free port) in a thread, stopped at the end of each test."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

import clipstore
from image_factory import pattern_image, write_exif_rotated_jpeg, write_image

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install '.[serve]'")

MINI = "clipstore-mini"
BASE_URL = "http://127.0.0.1:8765"


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> "clipstore.Store":
    """A read-only store shared by the session: 36 render-world images that carry their prompts (one folder per
    shape, under <root>/world) and, under <root>/photos, a JPEG whose EXIF says to rotate it. Tests must not
    change it (copy it first)."""
    from clipstore.world import render_folder

    root = tmp_path_factory.mktemp("serve-world")
    render_folder(root / "world", 36, seed=21)
    write_exif_rotated_jpeg(root / "photos" / "rotated.jpg", size=(300, 120))
    store = clipstore.connect(root / "s.clipstore", model=MINI)
    assert store.ingest(root / "world").prompts_found == 36
    assert store.ingest(root / "photos").added == 1
    return store


@pytest.fixture
def plain(tmp_path) -> "clipstore.Store":
    """A store of this test's own: six pattern images that carry no prompt (so its prompt bank is empty), under
    tmp_path / "photos"."""
    for seed in range(6):
        write_image(tmp_path / "photos" / f"img{seed}.png", pattern_image(seed))
    store = clipstore.connect(tmp_path / "plain.clipstore", model=MINI)
    store.ingest(tmp_path / "photos")
    return store


@pytest.fixture
def empty(tmp_path) -> "clipstore.Store":
    return clipstore.connect(tmp_path / "empty.clipstore", model=MINI)


@pytest.fixture
def client_for(tmp_path):
    """`client_for(store, **options)`: a Starlette TestClient on the app, thumbnails cached under tmp_path."""
    from fastapi.testclient import TestClient

    from clipstore.serve.app import create_app
    from clipstore.serve.options import ServeOptions

    clients = []

    def make(store, **options):
        options.setdefault("thumbnail_cache", str(tmp_path / "thumbnails"))
        client = TestClient(create_app(store, ServeOptions(**options)), base_url=BASE_URL)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(world, client_for):
    return client_for(world)


@pytest.fixture
def live_server(tmp_path):
    """`live_server(store, **options)` -> the base URL of a real uvicorn server on 127.0.0.1 (port 0: a free one),
    serving the store in a thread of this process; stopped (within 10 s) when the test ends."""
    from clipstore.serve.app import create_app
    from clipstore.serve.options import ServeOptions
    from clipstore.serve.server import bind, server_for

    running = []

    def start(store, **options) -> str:
        options.setdefault("thumbnail_cache", str(tmp_path / "thumbnails"))
        options = ServeOptions(**{"port": 0, **options})
        sock = bind("127.0.0.1", 0)
        server = server_for(create_app(store, options), sock)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread, sock))
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread, sock in running:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture
def world_copy(world, tmp_path) -> "clipstore.Store":
    """This test's own copy of the `world` store (the images stay where they are)."""
    return clipstore.connect(shutil.copytree(world.path, tmp_path / "copy.clipstore"))
