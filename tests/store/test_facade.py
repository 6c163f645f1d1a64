"""The Store facade: connect (creation, model identity, refusals), info, default location, image paths."""

from __future__ import annotations

import lancedb
import pytest

import clipstore
from mini_model import DEFAULT_MINI


def test_reopening_uses_the_stored_model_without_naming_it(store, store_path):
    reopened = clipstore.connect(store_path)
    assert reopened.model.same_vectors_as(store.model)


def test_other_model_is_refused_with_instructions(store, store_path, photo_folder):
    store.ingest(photo_folder)
    with pytest.raises(clipstore.ModelMismatchError) as excinfo:
        clipstore.connect(store_path, model="ViT-B-32:openai")
    message = str(excinfo.value)
    assert DEFAULT_MINI in message and "ViT-B-32:openai" in message
    assert "leave out --model" in message


def test_missing_store_is_not_created_when_create_is_false(tmp_path):
    with pytest.raises(clipstore.StoreNotFoundError, match="clipstore ingest FOLDER"):
        clipstore.connect(tmp_path / "nothing-here", create=False)
    assert not (tmp_path / "nothing-here").exists()


def test_a_non_empty_foreign_folder_is_not_turned_into_a_store(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(clipstore.StoreNotFoundError, match="not empty and not a clipstore store"):
        clipstore.connect(tmp_path / "photos", model="clipstore-mini")


def test_info_reports_counts_model_and_migrations(store, photo_folder):
    store.ingest(photo_folder)
    (photo_folder / "copy.png").write_bytes((photo_folder / "a" / "img1.png").read_bytes())
    store.ingest(photo_folder)
    info = store.info().to_dict()
    assert info["path"] == store.path
    assert (info["images"], info["files"]) == (6, 7)
    assert info["model"]["spec"] == DEFAULT_MINI
    assert info["migrations"][0]["name"] == "0001_create_tables"


def test_default_store_location_follows_env_and_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPSTORE_STORE", str(tmp_path / "env.clipstore"))
    assert clipstore.default_store_path() == str(tmp_path / "env.clipstore")
    monkeypatch.delenv("CLIPSTORE_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if clipstore.default_store_path().startswith(str(tmp_path)):  # Linux/BSD
        assert clipstore.default_store_path() == str(tmp_path / "xdg" / "clipstore" / "default.clipstore")


def test_import_clipstore_stays_light():
    import subprocess
    import sys

    code = "import sys, clipstore; heavy = [m for m in ('torch', 'open_clip', 'lancedb', 'sentence_transformers', 'pyarrow') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_a_store_whose_creation_stopped_midway_can_be_opened(tmp_path):
    path = tmp_path / "half.clipstore"
    path.mkdir()
    (path / ".clipstore-write.lock").write_bytes(b"")
    store = clipstore.connect(path, model="clipstore-mini")
    assert all(status.applied for status in store.migrations())


def test_an_empty_store_takes_the_model_asked_for(tmp_path):
    path = tmp_path / "empty.clipstore"
    clipstore.connect(path, model="ViT-B-32:random")  # no download needed: the store is created offline
    store = clipstore.connect(path, model="clipstore-mini")
    assert store.model.architecture == "clipstore-mini"
    assert clipstore.connect(path).model.architecture == "clipstore-mini"
    assert lancedb.connect(path).open_table("images").schema.field("embedding").type.list_size == 256


def test_hf_hub_names_get_a_clear_message(tmp_path):
    with pytest.raises(clipstore.ModelSpecError, match="not supported yet"):
        clipstore.connect(tmp_path / "s", model="hf-hub:timm/ViT-B-16-SigLIP")
    assert not (tmp_path / "s").exists()


def test_a_store_with_prompts_keeps_its_model(tmp_path):
    path = tmp_path / "p.clipstore"
    clipstore.connect(path, model="clipstore-mini").add_prompts(["a large red circle"])
    with pytest.raises(clipstore.ModelMismatchError):
        clipstore.connect(path, model="ViT-B-32:openai")


def test_image_paths_lists_every_copy(store, photo_folder):
    copy = photo_folder / "copy.png"
    copy.write_bytes((photo_folder / "b" / "img0.png").read_bytes())
    store.ingest(photo_folder)
    hit = store.search_image(copy, k=1)[0]
    assert store.image_paths(hit.id) == sorted([str(copy), str(photo_folder / "b" / "img0.png")])
    assert store.image_paths("0" * 64) == []
