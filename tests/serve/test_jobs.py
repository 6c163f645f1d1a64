"""Ingest from the page: refused unless --allow-ingest, and then only folders under a --root (after resolving `..`
and symlinks); one at a time; its progress polled until the report."""

from __future__ import annotations

import os
import time

import pytest

import clipstore
from image_factory import pattern_image, write_image, write_text_as_image

JSON = {"Accept": "application/json"}


@pytest.fixture
def incoming(tmp_path):
    """tmp_path / "incoming" (the root) with a folder of five new images and a text file named like one, and a
    folder outside it."""
    root = tmp_path / "incoming"
    for seed in range(5):
        write_image(root / "batch" / f"new{seed}.png", pattern_image(100 + seed))
    write_text_as_image(root / "batch" / "notes.jpg")
    write_image(tmp_path / "outside" / "secret.png", pattern_image(999))
    return root


def _finish(client, job: dict, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while not job["finished"]:
        assert time.monotonic() < deadline, f"the ingest did not finish: {job}"
        time.sleep(0.1)
        job = client.get(f"/ingest/{job['id']}", headers=JSON).json()
    return job


def test_a_read_only_server_refuses_to_ingest(client, tmp_path):
    response = client.post("/ingest", data={"folder": str(tmp_path)})
    assert response.status_code == 403 and "This server is read-only" in response.text
    assert "--allow-ingest --root DIR" in response.text


def test_ingest_a_folder_under_a_root_with_its_progress(client_for, plain, incoming):
    client = client_for(plain, allow_ingest=True, roots=(str(incoming),))
    before = plain.count_images()
    started = client.post("/ingest", data={"folder": str(incoming / "batch")}, headers=JSON)
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["folder"] == str(incoming / "batch") and job["report"] is None
    job = _finish(client, job)
    assert job["stage"] == "done" and job["error"] is None
    assert job["done"] == job["total"] == 6  # the last stage's counts: every file found was processed
    report = job["report"]
    assert report["added"] == 5 and [f["path"] for f in report["failed"]] == [str(incoming / "batch" / "notes.jpg")]
    assert plain.count_images() == before + 5
    assert client.get("/info", headers=JSON).json()["images"] == before + 5

    done = client.get(f"/ingest/{job['id']}")
    assert done.headers["hx-trigger"] == "ingested"  # the page refreshes its info and results
    assert "Ingested" in done.text and "added 5" in done.text and "notes.jpg: not an image" in done.text
    assert 'hx-trigger="every' not in done.text  # polling stops
    hits = client.get("/search", params={"like": clipstore.connect(plain.path).search_image(incoming / "batch" / "new2.png", k=1)[0].id}, headers=JSON)
    assert hits.json()["hits"][0]["path"] == str(incoming / "batch" / "new2.png")


def test_the_progress_fragment_polls_while_the_ingest_runs(client_for, plain, incoming):
    from clipstore.db.locking import write_lock

    client = client_for(plain, allow_ingest=True, roots=(str(incoming),))
    with write_lock(plain.location):  # another writer holds the store: the ingest waits for it
        job = client.post("/ingest", data={"folder": str(incoming)}, headers=JSON).json()
        deadline = time.monotonic() + 30
        while client.get(f"/ingest/{job['id']}", headers=JSON).json()["stage"] != "waiting for another writer":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        polling = client.get(f"/ingest/{job['id']}")
        assert f'hx-get="/ingest/{job["id"]}" hx-trigger="every 500ms"' in polling.text and "<progress" in polling.text
        assert "hx-trigger" not in polling.headers
        second = client.post("/ingest", data={"folder": str(incoming)})
        assert second.status_code == 409 and "is running; wait until it has finished" in second.text
    assert _finish(client, job)["report"]["added"] == 5


@pytest.mark.parametrize(
    "folder, status, message",
    [
        ("{tmp}/outside", 403, "is not under a folder this server may ingest from"),
        ("{root}/../outside", 403, "is not under a folder this server may ingest from"),
        ("{root}/escape", 403, "is not under a folder this server may ingest from"),  # a symlink out of the root
        ("{root}-sibling", 403, "is not under a folder"),  # a name that only starts like the root
        ("/", 403, "is not under a folder"),
        ("batch", 400, "Give the folder as an absolute path under"),
        ("{root}/no-such-folder", 400, "no such folder"),
        ("{root}/batch/new0.png", 400, "no such folder"),
    ],
)
def test_folders_outside_the_roots_are_refused(client_for, plain, incoming, tmp_path, folder, status, message):
    os.symlink(tmp_path / "outside", incoming / "escape")
    (tmp_path / "incoming-sibling").mkdir()
    client = client_for(plain, allow_ingest=True, roots=(str(incoming),))
    before = plain.count_images()
    response = client.post("/ingest", data={"folder": folder.format(tmp=tmp_path, root=incoming)})
    assert response.status_code == status and message in response.text
    assert plain.count_images() == before


def test_an_unknown_ingest_is_404(client_for, plain, incoming):
    client = client_for(plain, allow_ingest=True, roots=(str(incoming),))
    response = client.get("/ingest/0123456789ab", headers=JSON)
    assert response.status_code == 404 and response.json()["error"] == "No ingest 0123456789ab on this server."
