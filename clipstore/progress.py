"""The one shape of progress reports: `progress(stage, done, total)`.

Long operations (ingest, prompt inserts, training, fine-tuning, re-embedding, evaluation, describing a folder,
rendering) call it as their work goes on: `stage` names the step ("embed images", "prompt bank", ...), `done`
of `total` units of it are finished. The CLI draws one progress bar per stage from it.
"""

from __future__ import annotations

from typing import Callable

Progress = Callable[[str, int, int], None]


def silent(stage: str, done: int, total: int) -> None:
    """A progress callback that reports nothing (the default when none is given)."""
