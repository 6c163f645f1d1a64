"""How `clipstore serve` runs: the options, the loopback check and the check for the `serve` extra (no FastAPI
import here: the CLI reads these before anything heavy is loaded)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from clipstore.errors import InvalidOptionError, ServeError, SourceNotFoundError
from clipstore.imaging import DEFAULT_MAX_MEGAPIXELS
from clipstore.results import _AsDict

SERVE_EXTRA = ("fastapi", "uvicorn", "jinja2", "multipart")
"""The modules the `serve` extra installs (python-multipart is imported as `multipart`)."""

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class ServeOptions(_AsDict):
    """The web server's options (`clipstore serve`'s flags).

    host, port: where it listens (default 127.0.0.1:8765; port 0 picks a free one). allow_ingest: the page may
    ingest folders, only folders under `roots` (absolute paths; symlinks resolved). max_upload_mb: the largest
    request body accepted (an uploaded query image; larger ones get 413). max_megapixels: the decompression-bomb
    guard for uploads, thumbnails and describe (as ingest's). thumbnail_cache: where thumbnails are kept (default:
    `thumbnails/` in clipstore's per-user cache, `$CLIPSTORE_CACHE_DIR`).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    allow_ingest: bool = False
    roots: tuple[str, ...] = field(default_factory=tuple)
    max_upload_mb: float = 20.0
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    thumbnail_cache: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidOptionError(f"--port must be between 0 and 65535, not {self.port}.")
        if not self.max_upload_mb > 0:
            raise InvalidOptionError(f"--max-upload-mb must be above 0, not {self.max_upload_mb}.")
        if not self.max_megapixels > 0:
            raise InvalidOptionError(f"--max-megapixels must be above 0, not {self.max_megapixels}.")
        if self.roots and not self.allow_ingest:
            raise InvalidOptionError("--root only says where the page may ingest from: add --allow-ingest to allow it.")
        if self.allow_ingest and not self.roots:
            raise InvalidOptionError(
                "--allow-ingest needs at least one --root DIR: the page may ingest only folders under the roots given."
            )
        object.__setattr__(self, "roots", tuple(_root(root) for root in self.roots))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def loopback(self) -> bool:
        """Whether `host` is this machine only (127.0.0.0/8, ::1, localhost)."""
        return is_loopback(self.host)


def _root(root: str) -> str:
    """A root as an absolute, symlink-free folder path; SourceNotFoundError when it is not a folder."""
    path = os.path.realpath(os.path.expanduser(os.fspath(root)))
    if not os.path.isdir(path):
        raise SourceNotFoundError(f"--root {root}: no such folder. Give folders the page may ingest from.")
    return path


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: localhost, 127.0.0.0/8 and ::1."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_warning(host: str) -> str | None:
    """What to tell the user before listening on `host`: None for a loopback address, else a warning that the
    store becomes visible to others (the page has no login)."""
    if is_loopback(host):
        return None
    return (
        f"--host {host} is not a loopback address: anyone who can reach this machine can search this store and see "
        "its images (the page has no login). Use the default 127.0.0.1 unless you mean that."
    )


def require_serve_extra() -> None:
    """ServeError naming the install command when a module of the `serve` extra cannot be imported."""
    from importlib.util import find_spec

    names = {"multipart": "python-multipart"}
    missing = [names.get(module, module) for module in SERVE_EXTRA if find_spec(module) is None]  # found, not imported
    if missing:
        raise ServeError(
            f"clipstore serve needs the serve extra, and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            "not installed: pip install 'clipstore[serve]'"
        )
