"""The staged, resumable re-embed and its one-commit switch (clipstore.switch.reembed): crash + resume, reused
tables, carried columns, missing files — on real LanceDB stores with the real clipstore-mini model."""

from __future__ import annotations

import shutil

import pytest

import clipstore
from clipstore.db import layout, tables
from clipstore.encoders.identity import resolve_model
from clipstore.switch.reembed import ReembedError, staging_names
from mini_model import DEFAULT_MINI

RANDOM = "clipstore-mini:random"


def test_a_crash_midway_keeps_the_old_vectors_and_a_rerun_resumes(world, world_image):
    store, root = world
    query = world_image
    before = store.search_image(query, k=5)
    text_before = store.search_text("a red circle", k=3)

    class Crash(Exception):
        pass

    seen_midway = []

    def crash(stage, done, total):
        if stage == "re-embed images" and done == 20:  # mid-run: another reader still gets the old vectors
            reader = clipstore.connect(store.path)
            seen_midway.append((reader.model.spec, reader.search_image(query, k=5) == before))
        if stage == "re-embed images" and done == 25:
            raise Crash

    with pytest.raises(Crash):
        store.reembed(RANDOM, batch_size=8, progress=crash)
    assert seen_midway == [(DEFAULT_MINI, True)]
    assert store.model.spec == DEFAULT_MINI
    assert store.search_image(query, k=5) == before and store.search_text("a red circle", k=3) == text_before
    assert clipstore.connect(store.path).model.spec == DEFAULT_MINI
    staged = store.db.open_table(staging_names(resolve_model(RANDOM))["images"]).count_rows()
    assert staged == 24  # three whole batches of 8 were committed before the crash

    report = store.reembed(RANDOM, batch_size=8)
    assert report.switched and report.resumed == 24 and report.embedded == 16 and report.images == 40
    assert report.prompts_embedded == store.count_prompts() > 0  # another text encoder: the bank follows
    assert store.model.spec == RANDOM and clipstore.connect(store.path).model.spec == RANDOM
    assert store.search_image(query, k=1)[0].score == pytest.approx(1.0, abs=1e-3)
    assert store.count_images() == 40


def test_switching_again_to_a_checkpoint_that_moved_reuses_its_vectors(world, noisy_checkpoint, tmp_path, monkeypatch):
    """Issue #11 item 4: the table left by the first switch recorded the checkpoint's old path, and re-creating
    it with the new one failed with "Schema Error: Provided schema does not match existing table schema"."""
    from clipstore.encoders import clip

    store, root = world
    first = tmp_path / "first" / "model.safetensors"
    first.parent.mkdir()
    shutil.copyfile(noisy_checkpoint, first)
    store.reembed(f"clipstore-mini:{first}")
    before = store.search_text("a red circle", k=5)
    store.rollback()
    moved = tmp_path / "moved.safetensors"
    shutil.move(first, moved)
    report = store.reembed(f"clipstore-mini:{moved}")
    assert report.embedded == 0 and report.resumed == 40
    monkeypatch.setattr(clip, "_cache", {})  # load the weights afresh, from where the store says they are
    reopened = clipstore.connect(store.path)
    assert reopened.model.checkpoint_path == str(moved)
    assert reopened.search_text("a red circle", k=5) == before


def test_columns_added_to_the_images_table_are_carried_into_a_switch(world):
    """A later migration may add a column (as 0005 added `prompt_offered`; here a new `reviewed`) to the current
    images table only: a switch, a switch back to a table made before the column existed, and a rollback keep
    the column and its values."""
    store, _ = world
    images = tables.open_images(store.db)
    ids = sorted(tables.read_columns(images, ["id"]).column("id").to_pylist())
    images.add_columns({"reviewed": "prompt IS NOT NULL"})
    images.update(where=f"id = '{ids[0]}'", values={"reviewed": False})

    def offered() -> dict:
        rows = tables.read_columns(tables.open_images(store.db), ["id", "reviewed"]).to_pylist()
        return {row["id"]: row["reviewed"] for row in rows}

    expected = {image_id: image_id != ids[0] for image_id in ids}
    assert offered() == expected
    store.reembed(RANDOM)
    assert offered() == expected
    store.rollback()
    store.db.open_table(layout.IMAGES).update(where=f"id = '{ids[1]}'", values={"reviewed": False})
    store.reembed(RANDOM)  # reuses the table of the first switch: the changed value comes along
    assert offered() == {**expected, ids[1]: False}
    tables.open_images(store.db).update(where=f"id = '{ids[2]}'", values={"reviewed": False})
    tables.open_images(store.db).add_columns({"added_later": "width + 1"})
    store.rollback()
    assert tables.active_tables(store.db)["images"] == layout.IMAGES and offered() == {**expected, ids[1]: False}
    rows = tables.read_columns(tables.open_images(store.db), ["width", "added_later"]).to_pylist()
    assert [row["added_later"] for row in rows] == [row["width"] + 1 for row in rows]


def test_missing_files_stop_the_switch_unless_dropped(world, world_image):
    store, root = world
    victim = world_image
    moved = root / "moved.png"
    shutil.move(victim, moved)
    with pytest.raises(ReembedError, match="--drop-missing"):
        store.reembed(RANDOM)
    assert store.model.spec == DEFAULT_MINI
    report = store.reembed(RANDOM, drop_missing=True)
    assert len(report.dropped) == 1 and report.dropped[0].path == str(victim) and store.count_images() == 39
    shutil.move(moved, victim)  # the file comes back: the next ingest embeds it with the new model
    assert store.ingest(root / "world").added == 1 and store.count_images() == 40
