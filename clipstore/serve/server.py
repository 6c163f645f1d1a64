"""Listening: `serve(store, options)` binds the address (so a port in use is a clear ServeError, and port 0 a
known free port), warms the store's query path so the first search is as fast as the next, tells the caller the
URL and runs the app with uvicorn until it is stopped (Ctrl-C)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Callable

from clipstore.errors import ServeError
from clipstore.serve.options import ServeOptions, require_serve_extra

if TYPE_CHECKING:
    import uvicorn

    from clipstore.store.facade import Store


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); ServeError when the address cannot be used."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"Cannot listen on {host}: {exc.strerror or exc}. Give --host an address of this machine.") from exc
    family, kind, protocol, _, address = infos[0]
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = "Pick another --port (or 0 for any free one)." if exc.errno in (98, 48, 10048) else "Give --host an address of this machine."
        raise ServeError(f"Cannot listen on {url_of(host, port)}: {exc.strerror or exc}. {hint}") from exc
    return sock


def url_of(host: str, port: int) -> str:
    """The page's URL for a host and port ("::1" -> "http://[::1]:8765")."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def server_for(app, sock: socket.socket) -> "uvicorn.Server":
    """A uvicorn server for `app` on the listening socket (quiet: no access log)."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    return uvicorn.Server(config)


def warm_up(store: "Store") -> None:
    """Load what a text search needs (the query tower, the store's vectors) before the first request."""
    if store.count_images():
        store.search_text("a photo", k=1)


def serve(store: "Store", options: ServeOptions | None = None, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve `store`'s page until interrupted. `on_ready(url)` is called once the address is bound and the query
    path is warm. ServeError when the serve extra is missing or the address cannot be listened on."""
    options = options or ServeOptions()
    require_serve_extra()
    from clipstore.serve.app import create_app

    sock = bind(options.host, options.port)
    try:
        app = create_app(store, options)
        warm_up(store)
        server = server_for(app, sock)
        if on_ready is not None:
            on_ready(url_of(options.host, sock.getsockname()[1]))
        server.run(sockets=[sock])
    finally:
        sock.close()
