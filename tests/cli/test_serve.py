"""`clipstore serve` from the command line: its errors are one `Error:` line, a non-loopback --host is warned about,
a missing serve extra names the install command, `import clipstore.cli` loads no web framework, and a real process
serves the page and prints its URL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

import clipstore
from clipstore.cli import main


def _one_error_line(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


def test_a_missing_store_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--store", str(tmp_path / "none.clipstore")])
    _one_error_line(result, "No clipstore store at")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--allow-ingest"], "--allow-ingest needs at least one --root DIR"),
        (["--root", "."], "--root only says where the page may ingest from: add --allow-ingest"),
        (["--allow-ingest", "--root", "no-such-folder"], "--root no-such-folder: no such folder"),
    ],
)
def test_ingest_options_are_checked(store_path, args, message):
    result = CliRunner().invoke(main, ["serve", "--store", str(store_path), *args])
    _one_error_line(result, message)


def test_a_non_loopback_host_is_warned_about_and_an_address_not_ours_is_an_error(store, photo_folder):
    store.ingest(photo_folder)
    result = CliRunner().invoke(main, ["serve", "--store", store.path, "--host", "192.0.2.1"])
    assert result.stderr.startswith("Warning: --host 192.0.2.1 is not a loopback address: anyone who can reach")
    _one_error_line(result, "Cannot listen on http://192.0.2.1:8765")


def test_a_missing_serve_extra_is_one_line(store_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    result = CliRunner().invoke(main, ["serve", "--store", str(store_path)])
    _one_error_line(result, "clipstore serve needs the serve extra, and fastapi is not installed: pip install 'clipstore[serve]'")


def test_importing_the_cli_loads_no_web_framework(tmp_path):
    code = "import sys, clipstore, clipstore.cli, clipstore.serve; print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn', 'jinja2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip() == "[]"


@pytest.mark.slow  # a fresh interpreter loads the store and the model (a few seconds)
def test_clipstore_serve_prints_its_url_serves_the_page_and_stops_on_ctrl_c(store, photo_folder, tmp_path):
    import httpx

    store.ingest(photo_folder)
    child = subprocess.Popen(
        [sys.executable, "-m", "clipstore.cli", "serve", "--store", store.path, "--port", "0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        ready = json.loads(child.stdout.readline())
        assert ready["store"] == store.path and ready["allow_ingest"] is False and ready["roots"] == []
        assert ready["url"].startswith("http://127.0.0.1:") and not ready["url"].endswith(":0")
        with httpx.Client(base_url=ready["url"], timeout=30) as http:
            assert http.get("/").status_code == 200
            hits = http.get("/search", params={"q": "a pattern", "k": 2}, headers={"Accept": "application/json"}).json()["hits"]
            assert [hit["id"] for hit in hits] == [hit.id for hit in clipstore.connect(store.path).search_text("a pattern", k=2)]
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=20) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    assert "Traceback" not in child.stderr.read()
