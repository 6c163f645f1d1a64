"""clipstore.describe.heads: choosing a saved head, and refusing one trained on another encoder."""

from __future__ import annotations

import pytest

import clipstore


def test_a_head_from_another_base_model_is_refused(trained, tmp_path, photo_folder):
    store, _ = trained
    other = clipstore.connect(tmp_path / "other.clipstore", model="clipstore-mini:random")
    other.ingest(photo_folder)
    other.add_prompts(["a red circle", "a blue square"])
    with pytest.raises(clipstore.ModelMismatchError, match="retrain"):
        other.describe(next(photo_folder.rglob("*.png")), head=store.heads()[0].folder)
    with pytest.raises(clipstore.HeadNotFoundError):
        store.describe(next(photo_folder.rglob("*.png")), head="no-such-head")
