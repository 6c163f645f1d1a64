"""A cross-process write lock for a store.

LanceDB lets many processes read while one writes, but two writers can race (e.g. duplicate rows from
concurrent merge_insert, lancedb#3377). Every clipstore write (migrations, ingest, prune) takes this lock, an
advisory lock on `<store>/.clipstore-write.lock`; readers never take it.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from clipstore.errors import ClipstoreError, NotWritableError
from clipstore.db import layout



@contextmanager
def write_lock(
    store_path: str, timeout: float | None = None, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold the store's write lock for the duration of the block; wait for it (forever by default).

    `on_wait` is called once if the lock is held by another process, before waiting (e.g. to tell the user).
    """
    try:
        os.makedirs(store_path, exist_ok=True)
        handle = open(os.path.join(store_path, layout.LOCK_FILE), "a+b")
    except OSError as exc:
        raise NotWritableError.from_os_error(
            f"to the store at {store_path}",
            exc,
            "Reading and searching work without writing; to change the store, copy it to a writable disk (or get "
            "write access) and pass --store with that path.",
        ) from exc
    try:
        if not _try_lock(handle):
            if on_wait is not None:
                on_wait()
            _acquire(handle, timeout, store_path)
        try:
            yield
        finally:
            _release(handle)
    finally:
        handle.close()


try:
    import fcntl

    def _try_lock(handle) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _release(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

except ImportError:  # Windows
    import msvcrt

    def _try_lock(handle) -> bool:
        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _release(handle) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)


def _acquire(handle, timeout: float | None, store_path: str) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.01
    while not _try_lock(handle):
        if deadline is not None and time.monotonic() >= deadline:
            raise ClipstoreError(
                f"Another process is writing to the store at {store_path} (lock {layout.LOCK_FILE} is held). "
                "Wait for it to finish, or stop it, and try again."
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
