"""Functions run in child processes by tests (importable by name, which test modules are not)."""

from __future__ import annotations

import clipstore


def insert_prompts(store_path: str, texts: list[str], out) -> None:
    """Add `texts` to the store's prompt bank and put the rejected (text, kept id) pairs on `out`."""
    store = clipstore.connect(store_path)
    report = store.add_prompts(texts)
    out.put([(d.text, d.duplicate_of) for d in report.duplicates])


def ingest_and_hold(store_path: str, folder: str, hold_after: int) -> None:
    """Ingest `folder`, committing every 8 images, and stop moving once `hold_after` files are processed: the
    rows committed so far are on disk and the rest (and the prompt bank update) are not. The test kills it."""
    import time

    from clipstore.ingest.run import EMBED_STAGE, FolderIngest, IngestOptions
    from clipstore.db.locking import write_lock

    store = clipstore.connect(store_path)

    def hold(stage: str, done: int, total: int) -> None:
        if stage == EMBED_STAGE and done >= hold_after:
            time.sleep(600)

    with write_lock(store.path):
        FolderIngest(
            store.db,
            lambda: store.encoder,
            folder,
            options=IngestOptions(batch_size=4, commit_every=8),
            progress=hold,
            prompt_bank=store._prompt_bank,
        ).run()
