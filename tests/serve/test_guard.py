"""The checks before the app: the Host header, cross-site POSTs, the upload limit (declared or streamed), and the
page's security headers."""

from __future__ import annotations

from html import unescape

import pytest

from clipstore.serve.guard import host_name

JSON = {"Accept": "application/json"}


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "192.168.1.10:8765", ""])
def test_a_foreign_host_header_is_refused(client, host):
    response = client.get("/", headers={"Host": host})
    assert response.status_code == 400 and "Unknown Host header" in response.text


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "LOCALHOST", "[::1]:8765"])
def test_loopback_names_are_answered(client, host):
    assert client.get("/", headers={"Host": host}).status_code == 200


def test_any_host_is_answered_on_a_non_loopback_address(client_for, world):
    client = client_for(world, host="192.0.2.10")
    assert client.get("/info", headers={"Host": "photos.lan:8765"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},  # another local service is another origin
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_cross_site_posts_are_refused(client, headers):
    response = client.post("/upload", files={"image": ("a.png", b"x", "image/png")}, headers=headers)
    assert response.status_code == 403 and "Cross-site requests are refused" in response.text


def test_same_origin_posts_pass(client):
    headers = {"Origin": "http://127.0.0.1:8765", "Sec-Fetch-Site": "same-origin"}
    response = client.post("/upload", files={"image": ("a.txt", b"text", "text/plain")}, headers=headers)
    assert response.status_code == 422  # reached the app: refused as not an image, not as cross-site


def test_an_upload_over_the_limit_is_413_before_it_is_read(client_for, world):
    client = client_for(world, max_upload_mb=0.5)
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (600 * 1024)
    response = client.post("/upload", files={"image": ("big.png", big, "image/png")})
    assert response.status_code == 413 and "larger than this server's limit of 0.5 MB" in unescape(response.text)
    assert "--max-upload-mb" in response.text
    as_json = client.post("/upload", files={"image": ("big.png", big, "image/png")}, headers=JSON)
    assert as_json.status_code == 413 and as_json.json()["status"] == 413


def test_a_streamed_upload_without_a_length_is_counted(client_for, world):
    client = client_for(world, max_upload_mb=0.5)
    boundary = "clipstoreboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def body():  # chunked: no Content-Length for the guard to read
        yield head
        for _ in range(10):
            yield b"\0" * (100 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/upload", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413 and "larger than this server's limit" in unescape(response.text)


def test_html_answers_carry_the_security_headers(client):
    page = client.get("/")
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    assert "content-security-policy" not in client.get("/static/htmx.min.js").headers


@pytest.mark.parametrize(
    "header, name",
    [("127.0.0.1:8765", "127.0.0.1"), ("[::1]:8765", "::1"), ("LocalHost", "localhost"), ("::1", "::1"), ("[::1", "[::1")],
)
def test_host_names(header, name):
    assert host_name(header) == name
