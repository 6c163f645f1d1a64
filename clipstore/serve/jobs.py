"""Ingest from the page (`--allow-ingest`): folders under the `--root` folders only, one ingest at a time, run in a
thread while the page polls its progress."""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from clipstore.errors import ClipstoreError

if TYPE_CHECKING:
    from clipstore.results import IngestReport
    from clipstore.store.facade import Store

JOBS_KEPT = 20


class IngestRefused(Exception):
    """An ingest the page may not start: `status` 403 (not allowed, or outside the roots), 400 (not a folder)
    or 409 (another one is running), and why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class IngestJob:
    """One ingest started from the page, as its progress callback last left it.

    stage: "starting", "waiting for another writer", the ingest's own stages ("embed images", "prompt bank",
    "build index"), then "done" or "failed". done/total: the counts of the current stage. report: the
    IngestReport once done; error: the message once failed.
    """

    id: str
    folder: str
    stage: str = "starting"
    done: int = 0
    total: int = 0
    report: "IngestReport | None" = None
    error: str | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.stage in ("done", "failed")

    def progress(self, stage: str, done: int, total: int) -> None:
        self.stage, self.done, self.total = stage, done, total

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "folder": self.folder,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "finished": self.finished,
            "report": self.report.to_dict() if self.report is not None else None,
            "error": self.error,
        }


class IngestJobs:
    """The ingests of one server: `start(folder)` checks the folder against the roots and runs it in a thread."""

    def __init__(self, store: "Store", roots: tuple[str, ...], allowed: bool):
        self.store = store
        self.roots = roots
        self.allowed = allowed
        self._jobs: dict[str, IngestJob] = {}
        self._lock = threading.Lock()

    def start(self, folder: str) -> IngestJob:
        """Start ingesting `folder` (an absolute path under a root); IngestRefused says why not."""
        real = self.check(folder)
        with self._lock:
            running = next((job for job in self._jobs.values() if not job.finished), None)
            if running is not None:
                raise IngestRefused(409, f"An ingest of {running.folder} is running; wait until it has finished.")
            job = IngestJob(uuid.uuid4().hex[:12], real)
            self._jobs[job.id] = job
            while len(self._jobs) > JOBS_KEPT:
                oldest = next(iter(self._jobs))
                if not self._jobs[oldest].finished:
                    break
                del self._jobs[oldest]
        job._thread = threading.Thread(target=self._run, args=(job,), name=f"clipstore-ingest-{job.id}", daemon=True)
        job._thread.start()
        return job

    def get(self, job_id: str) -> IngestJob | None:
        return self._jobs.get(job_id)

    def check(self, folder: str) -> str:
        """The real path of `folder` when the page may ingest it: ingest allowed, an absolute path (or ~/...),
        a folder, and under one of the roots once every symlink and `..` is resolved."""
        if not self.allowed:
            raise IngestRefused(403, "This server is read-only: start it with --allow-ingest --root DIR to ingest from the page.")
        expanded = os.path.expanduser(folder.strip())
        if not os.path.isabs(expanded):
            raise IngestRefused(400, f"Give the folder as an absolute path under {self._roots_text()}.")
        real = os.path.realpath(expanded)
        if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in self.roots):
            raise IngestRefused(403, f"{folder} is not under a folder this server may ingest from ({self._roots_text()}).")
        if not os.path.isdir(real):
            raise IngestRefused(400, f"{folder}: no such folder.")
        return real

    def _roots_text(self) -> str:
        return ", ".join(self.roots) or "no folder"

    def _run(self, job: IngestJob) -> None:
        def waiting() -> None:
            job.stage = "waiting for another writer"

        try:
            job.report = self.store.ingest(job.folder, progress=job.progress, on_lock_wait=waiting)
            job.stage = "done"
        except ClipstoreError as exc:
            job.error = str(exc)
            job.stage = "failed"
        except Exception as exc:  # a bug: the page says so instead of polling forever
            job.error = f"The ingest stopped with an unexpected error ({type(exc).__name__}: {exc})."
            job.stage = "failed"
            raise
