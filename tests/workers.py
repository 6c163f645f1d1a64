"""Functions run in child processes by tests (importable by name, which test modules are not)."""

from __future__ import annotations

import clipstore


def insert_prompts(store_path: str, texts: list[str], out) -> None:
    """Add `texts` to the store's prompt bank and put the rejected (text, kept id) pairs on `out`."""
    store = clipstore.connect(store_path)
    report = store.add_prompts(texts)
    out.put([(d.text, d.duplicate_of) for d in report.duplicates])
