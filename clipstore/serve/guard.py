"""What every request passes before the app sees it (ASGI middleware):

- its Host must be one the server answers to (on a loopback address: localhost, 127.x, ::1), so a web page
  elsewhere cannot reach the store through DNS rebinding;
- a POST must come from the page itself (no cross-site Origin or Sec-Fetch-Site), so another site cannot make
  the browser upload or ingest;
- its body may not exceed the upload limit: a Content-Length over it is refused before anything is read, and a
  body without one is counted as it arrives (past the limit, reading it raises Starlette's HTTPException 413,
  which the app answers like its other errors);
- HTML answers carry a Content-Security-Policy that allows only the server's own scripts, styles and images.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestRefused(Exception):
    """A request the guard turns away: `status` and the message the client gets."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Guard:
    """ASGI middleware: the host, same-origin and body-size checks, and the page's security headers.

    allowed_hosts: host names (no port) the server answers to, or None for any (a non-loopback --host).
    max_body: the most bytes a request body may have. render(status, message, wants_json) -> (media type, body)
    makes the refusal the client sees (HTML or JSON, like the app's own errors).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: frozenset[str] | None,
        max_body: int,
        render: Callable[[int, str, bool], tuple[str, bytes]] | None = None,
    ):
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.max_body = max_body
        self.render = render or _plain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
        wants_json = "application/json" in headers.get("accept", "")
        try:
            self._check(scope, headers)
        except RequestRefused as refused:
            await self._refuse(send, refused, wants_json)
            return

        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413, self._too_large())
            return message

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = _with_security_headers(list(message.get("headers", [])))
            await send(message)

        await self.app(scope, counted_receive, secured_send)

    def _check(self, scope: Scope, headers: dict[str, str]) -> None:
        if self.allowed_hosts is not None and host_name(headers.get("host", "")) not in self.allowed_hosts:
            raise RequestRefused(400, "Unknown Host header: this server answers only to the address it listens on.")
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            foreign = origin is not None and origin.split("://", 1)[-1].lower() != headers.get("host", "").lower()
            if foreign or headers.get("sec-fetch-site") in ("cross-site", "same-site"):
                raise RequestRefused(403, "Cross-site requests are refused: use the page this server serves.")
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                raise RequestRefused(413, self._too_large())

    def _too_large(self) -> str:
        return (
            f"The upload is larger than this server's limit of {self.max_body / 1024 / 1024:g} MB "
            "(clipstore serve --max-upload-mb)."
        )

    async def _refuse(self, send: Send, refused: RequestRefused, wants_json: bool) -> None:
        media_type, body = self.render(refused.status, str(refused), wants_json)
        headers = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
        if refused.status == 413:
            headers.append((b"connection", b"close"))  # the rest of the body is never read
        await send({"type": "http.response.start", "status": refused.status, "headers": _with_security_headers(headers)})
        await send({"type": "http.response.body", "body": body})


def host_name(host: str) -> str:
    """The host of a Host header or an origin's authority, without the port, lowercase ("[::1]:8765" -> "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    names = {name.lower() for name, _ in headers}
    extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
    content_type = next((value for name, value in headers if name.lower() == b"content-type"), b"")
    if content_type.startswith(b"text/html"):
        extra.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
    return headers + [(name, value) for name, value in extra if name not in names]


def _plain(status: int, message: str, wants_json: bool) -> tuple[str, bytes]:
    if wants_json:
        return "application/json", json.dumps({"error": message, "status": status}).encode()
    return "text/plain; charset=utf-8", message.encode()
