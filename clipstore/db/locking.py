"""One writer at a time, for a store in a local folder and for one on object storage.

LanceDB lets many processes read while one writes, and Lance commits every table write atomically (a commit that
finds another one first is rebased or retried, never lost). But two clipstore writers can still race on what
their writes mean (e.g. duplicate rows from concurrent merge_insert, lancedb#3377; a model switch while an ingest
writes the old tables). So every clipstore write (migrations, ingest, prune, prompt changes, recording a head, a
model switch) holds the store's write lock; readers never take it.

- A local folder: an advisory lock (`flock`, `msvcrt` on Windows) on `<store>/.clipstore-write.lock`, released by
  the operating system when its process ends, however it ends.
- Object storage has no file locks, so the lock is a lease: the one row of the `_clipstore_write_lease` table
  names the writer and when its lease ends. Taking it is a Lance `update` of that row filtered on "free or
  expired"; Lance commits on object storage with a conditional put, and an update that finds another commit
  first is run again on the new version, so of two writers taking a free lease exactly one updates the row.
  The holder renews it every `LEASE_SECONDS / 4` seconds from a background thread and frees it when done. A
  writer that dies keeps it at most `LEASE_SECONDS`, after which the next writer takes it over; a writer that
  could not renew in time (suspended longer than that) finds out when it finishes and raises
  WriteLeaseLostError. Expiry compares the clocks of different machines: they must agree to within seconds.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Callable, Iterator

from clipstore.db import layout
from clipstore.db.location import StoreLocation
from clipstore.errors import ClipstoreError, NotWritableError, WriteLeaseLostError

if TYPE_CHECKING:
    import lancedb

LEASE_SECONDS = 60.0
"""How long a write lease on object storage lasts without renewal (its holder renews it four times as often)."""
CLEANUP_EVERY = 100
"""Versions of the lease table between two removals of its old versions (older than an hour)."""


@contextmanager
def write_lock(
    store: "str | StoreLocation",
    timeout: float | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold the store's write lock for the duration of the block; wait for it (forever by default).

    `store`: the store's `StoreLocation` (or the path of a local store). `on_wait` is called once if another
    process holds the lock, before waiting (e.g. to tell the user).
    """
    location = store if isinstance(store, StoreLocation) else StoreLocation(store)
    hold = _write_lease if location.remote else _file_lock
    with hold(location, timeout, on_wait):
        yield


def _busy(location: StoreLocation, held_by: str) -> ClipstoreError:
    return ClipstoreError(
        f"Another process is writing to the store at {location.root} ({held_by}). Wait for it to finish, or stop "
        "it, and try again."
    )


def _acquire(try_once: Callable[[], bool], timeout: float | None, on_wait, busy: Callable[[], ClipstoreError], max_delay: float) -> None:
    """Call `try_once` until it succeeds: `on_wait()` once before the first wait, `busy()` raised at `timeout`."""
    if try_once():
        return
    if on_wait is not None:
        on_wait()
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.01
    while not try_once():
        if deadline is not None and time.monotonic() >= deadline:
            raise busy()
        time.sleep(delay)
        delay = min(delay * 2, max_delay)


# --- a local folder: an advisory file lock ---------------------------------------------------------------------


@contextmanager
def _file_lock(location: StoreLocation, timeout: float | None, on_wait) -> Iterator[None]:
    store_path = location.root
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
        _acquire(lambda: _try_lock(handle), timeout, on_wait, lambda: _busy(location, f"lock {layout.LOCK_FILE} is held"), 0.25)
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


# --- object storage: a lease in a Lance table ------------------------------------------------------------------


@contextmanager
def _write_lease(location: StoreLocation, timeout: float | None, on_wait) -> Iterator[None]:
    lease = WriteLease(location)
    _acquire(lease.try_acquire, timeout, on_wait, lambda: _busy(location, f"write lease held by {lease.held_by()}"), 1.0)
    renewing = threading.Event()
    heartbeat = threading.Thread(target=lease.keep, args=(renewing,), name="clipstore-write-lease", daemon=True)
    heartbeat.start()
    try:
        yield
    except BaseException:
        renewing.set()
        heartbeat.join()
        try:
            lease.release()
        except Exception:  # the body's error is the one to report; an unreleased lease expires by itself
            pass
        raise
    renewing.set()
    heartbeat.join()
    if not lease.release():
        raise WriteLeaseLostError(
            f"This process lost the write lease of the store at {location.root} before it finished writing (it "
            f"could not renew it within {lease.seconds:g} s, e.g. while suspended), so another writer may have "
            "written at the same time. Check the store (clipstore info) and run the command again."
        )


class WriteLease:
    """The write lease of a store on object storage (see the module docstring): `try_acquire`, `keep` (renew
    until told to stop), `release`. `holder` names this writer: host, process id and a random part."""

    def __init__(self, location: StoreLocation, seconds: float | None = None):
        self.location = location
        self.seconds = LEASE_SECONDS if seconds is None else seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._table = _lease_table(location.connect(), location)
        self.lost = False

    def try_acquire(self) -> bool:
        """Take the lease if it is free or expired; False when another writer holds it. (The lease is read first:
        an update commits a version even when it matches nothing, and waiting writers poll.)"""
        now = _now_ms()
        row = self._row()
        if row["holder"] and row["expires_ms"] >= now:
            return False
        return self._update(f"holder = '' OR expires_ms < {now}", self.holder, now + int(self.seconds * 1000))

    def keep(self, stop: threading.Event) -> None:
        """Renew the lease every `seconds / 4` until `stop` is set; stops renewing once it is found lost."""
        while not stop.wait(self.seconds / 4):
            try:
                if not self._update(self._mine(), self.holder, _now_ms() + int(self.seconds * 1000)):
                    self.lost = True
                    return
            except Exception:  # a passing network failure: try again at the next beat, the lease has time left
                continue

    def release(self) -> bool:
        """Free the lease; False when it was no longer this writer's (lost). Every `CLEANUP_EVERY` versions the
        lease table's old versions are removed (each take, renewal and release is a commit)."""
        freed = self._update(self._mine(), "", 0)
        if freed and self._table.version % CLEANUP_EVERY == 0:
            try:
                self._table.cleanup_old_versions(older_than=timedelta(hours=1))
            except Exception:  # tidying only: a failure costs some space until the next try, nothing else
                pass
        return freed and not self.lost

    def held_by(self) -> str:
        """Who holds the lease and for how long yet, for messages."""
        row = self._row()
        if not row["holder"]:
            return "free now"
        left = max(0.0, (row["expires_ms"] - _now_ms()) / 1000)
        return f"by {row['holder']}, for {left:.0f} s more unless renewed"

    def _row(self) -> dict:
        with self.location.errors():
            return self._table.search().select(["holder", "expires_ms"]).limit(1).to_arrow().to_pylist()[0]

    def _mine(self) -> str:
        return f"holder = '{self.holder}'"

    def _update(self, where: str, holder: str, expires_ms: int) -> bool:
        """One conditional update of the lease row: True when it matched (Lance re-runs it on a newer commit)."""
        with self.location.errors():
            try:
                result = self._table.update(where=where, values={"holder": holder, "expires_ms": expires_ms})
            except (OSError, RuntimeError) as exc:
                if "contention" in str(exc).lower():  # Lance gave up retrying: others are busy with the lease
                    return False
                raise
        return result.rows_updated == 1


def _lease_table(db: "lancedb.DBConnection", location: StoreLocation) -> "lancedb.table.Table":
    """The lease table, created with its one free row by the first writer (of two creating it at once, Lance
    lets one commit the table; the other opens it)."""
    import pyarrow as pa

    schema = layout.lease_schema()
    with location.errors():
        try:
            return db.open_table(layout.LEASE_TABLE)
        except ValueError:  # not there yet
            pass
        free = pa.table({"key": ["write"], "holder": [""], "expires_ms": [0]}, schema=schema)
        try:
            return db.create_table(layout.LEASE_TABLE, data=free, schema=schema)
        except (ValueError, OSError, RuntimeError):
            return db.open_table(layout.LEASE_TABLE)  # created by another writer meanwhile


def _now_ms() -> int:
    return int(time.time() * 1000)
