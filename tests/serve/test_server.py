"""The options, the loopback check, the check for the serve extra, and listening: a real uvicorn server on
127.0.0.1 answering over HTTP, a port in use, an address that is not this machine's."""

from __future__ import annotations

import socket
import sys

import httpx
import pytest

import clipstore
from clipstore.serve.options import ServeOptions, host_warning, is_loopback, require_serve_extra
from clipstore.serve.server import bind, url_of


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "LocalHost", "::1", "[::1]"])
def test_loopback_hosts_need_no_warning(host):
    assert is_loopback(host) and host_warning(host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "photos.lan"])
def test_other_hosts_are_warned_about(host):
    assert not is_loopback(host)
    warning = host_warning(host)
    assert f"--host {host} is not a loopback address" in warning and "no login" in warning


def test_options_are_checked(tmp_path):
    with pytest.raises(clipstore.InvalidOptionError, match="--allow-ingest needs at least one --root"):
        ServeOptions(allow_ingest=True)
    with pytest.raises(clipstore.InvalidOptionError, match="add --allow-ingest"):
        ServeOptions(roots=(str(tmp_path),))
    with pytest.raises(clipstore.SourceNotFoundError, match="no such folder"):
        ServeOptions(allow_ingest=True, roots=(str(tmp_path / "missing"),))
    with pytest.raises(clipstore.InvalidOptionError, match="--max-upload-mb"):
        ServeOptions(max_upload_mb=0)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    options = ServeOptions(allow_ingest=True, roots=(str(tmp_path / "link"),), max_upload_mb=1.5)
    assert options.roots == (str(tmp_path / "real"),)  # symlinks resolved once, at start
    assert options.max_upload_bytes == 1572864 and ServeOptions().to_dict()["port"] == 8765


def test_a_missing_serve_extra_names_the_install_command(monkeypatch):
    require_serve_extra()  # installed here
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what `import uvicorn` meets when it is not installed
    monkeypatch.setitem(sys.modules, "multipart", None)
    with pytest.raises(clipstore.ServeError) as error:
        require_serve_extra()
    assert str(error.value) == (
        "clipstore serve needs the serve extra, and uvicorn, python-multipart are not installed: pip install 'clipstore[serve]'"
    )


def test_a_port_in_use_is_a_clear_error():
    taken = bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(clipstore.ServeError, match=rf"Cannot listen on http://127.0.0.1:{port}: .*Pick another --port"):
            bind("127.0.0.1", port)
    finally:
        taken.close()


def test_an_address_of_another_machine_is_a_clear_error():
    with pytest.raises(clipstore.ServeError, match=r"Cannot listen on http://192.0.2.1:8765: .*Give --host an address of this machine"):
        bind("192.0.2.1", 8765)  # TEST-NET-1: never an address of this machine
    with pytest.raises(clipstore.ServeError, match="Cannot listen on no-such-host.invalid"):
        bind("no-such-host.invalid", 8765)


def test_urls():
    assert url_of("127.0.0.1", 8765) == "http://127.0.0.1:8765" and url_of("::1", 80) == "http://[::1]:80"


def test_a_real_server_answers_over_http_on_loopback_only(live_server, world):
    url = live_server(world)
    assert url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=url, timeout=30) as http:
        page = http.get("/")
        assert page.status_code == 200 and "clipstore" in page.text
        hits = http.get("/search", params={"q": "a red circle", "k": 3}, headers={"Accept": "application/json"}).json()["hits"]
        assert [hit["id"] for hit in hits] == [hit.id for hit in world.search_text("a red circle", k=3)]
        thumb = http.get(f"/image/{hits[0]['id']}/thumb")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    port = int(url.rsplit(":", 1)[1])
    listening = socket.socket()
    try:
        assert listening.connect_ex(("127.0.0.1", port)) == 0
    finally:
        listening.close()
