"""The tower cache: written atomically when a model loads, read only when every tensor matches its digest (a damaged
file is deleted and written again by the next load), and what lets a search embed its query without the model."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import clipstore
from clipstore.encoders import tower_cache
from clipstore.encoders.clip import ClipEncoder
from clipstore.encoders.identity import resolve_model
from clipstore.encoders.tower_cache import cached_tower, encode_query, tower_path

MINI = "clipstore-mini"


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch) -> Path:
    """This test's own cache folder (empty)."""
    path = tmp_path / "cache"
    monkeypatch.setenv(tower_cache.CACHE_ENV, str(path))
    return path


@pytest.fixture
def mini():
    return resolve_model(MINI)


def _load_model(identity) -> ClipEncoder:
    """A fresh ClipEncoder (not the process-wide one), so that loading it runs the cache hook now."""
    return ClipEncoder(identity, device="cpu", precision="fp32")


def _tensor_span(path: str, name: str) -> tuple[int, int]:
    """Byte offsets [start, end) of tensor `name`'s data in a safetensors file."""
    with open(path, "rb") as handle:
        header_size = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(header_size))
    start, end = header[name]["data_offsets"]
    return 8 + header_size + start, 8 + header_size + end


def _flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x40]))


def test_loading_a_model_writes_both_towers_atomically(cache_dir, mini):
    _load_model(mini)
    files = sorted(p.relative_to(cache_dir).as_posix() for p in cache_dir.rglob("*") if p.is_file())
    assert files == sorted(Path(tower_path(kind, mini)[0]).relative_to(cache_dir).as_posix() for kind in ("text", "vision"))
    assert all(name.startswith(("text-towers/", "vision-towers/")) and name.endswith(".safetensors") for name in files)
    assert cached_tower("text", mini).encode_texts(["a red circle"]).shape == (1, mini.embed_dim)


def test_the_key_ignores_where_a_checkpoint_lies_but_not_which_weights(mini):
    from dataclasses import replace

    moved = replace(mini, checkpoint_path="/elsewhere/clipstore-mini.safetensors")
    other = replace(mini, checkpoint_sha256="0" * 64)
    assert tower_path("text", moved) == tower_path("text", mini)
    assert tower_path("text", other) != tower_path("text", mini) != tower_path("vision", mini)


def _damage_tensor(kind: str, name: str):
    def damage(path: str) -> None:
        start, end = _tensor_span(path, name)
        _flip_byte(path, (start + end) // 2)

    return damage


def _truncate(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(Path(path).stat().st_size // 2)


def _garbage(path: str) -> None:
    Path(path).write_bytes(b"not a safetensors file at all")


@pytest.mark.parametrize(
    "kind, damage",
    [
        ("text", _damage_tensor("text", "blocks.1.mlp.c_fc.weight")),
        ("text", _damage_tensor("text", "positional_embedding")),
        ("vision", _damage_tensor("vision", "conv1.weight")),
        ("vision", _truncate),
        ("text", _garbage),
    ],
)
def test_a_damaged_tower_is_ignored_deleted_and_written_again(cache_dir, mini, kind, damage):
    _load_model(mini)
    path = tower_path(kind, mini)[0]
    damage(path)
    assert cached_tower(kind, mini) is None
    assert not Path(path).exists()
    _load_model(mini)  # the next load of the model writes it again
    assert cached_tower(kind, mini) is not None


def test_another_towers_file_in_its_place_is_not_used(cache_dir, mini):
    _load_model(mini)
    text_path, vision_path = tower_path("text", mini)[0], tower_path("vision", mini)[0]
    Path(text_path).write_bytes(Path(vision_path).read_bytes())
    assert cached_tower("text", mini) is None


def test_a_damaged_token_embedding_block_falls_back_to_the_full_encoder(cache_dir, mini):
    """Token rows are checked block by block when a query first reads them: a damaged block is never used."""
    encoder = _load_model(mini)
    path = tower_path("text", mini)[0]
    start, _ = _tensor_span(path, tower_cache.TOKEN_EMBEDDING)
    row_bytes = 4 * cached_tower("text", mini).weights["positional_embedding"].shape[1]
    tower_cache._loaded.clear()  # as a new process would see it
    _flip_byte(path, start + 320 * row_bytes + 5)  # row 320: the token of "a"
    assert cached_tower("text", mini) is not None  # the blocks are read only by a query
    vectors = encode_query("text", mini, ["a red circle"], lambda: encoder)
    assert np.array_equal(vectors, encoder.encode_texts(["a red circle"]))
    assert not Path(path).exists()
    assert cached_tower("text", mini) is None


def test_queries_are_embedded_by_the_cached_towers_without_the_model(cache_dir, mini):
    encoder = _load_model(mini)

    def no_model():
        raise AssertionError("the full model was loaded")

    text = encode_query("text", mini, ["a red circle", "a blue square"], no_model)
    assert np.sum(text * encoder.encode_texts(["a red circle", "a blue square"]), axis=1).min() >= 0.9999
    from image_factory import pattern_image

    image = pattern_image(3, size=(120, 90))
    vision = encode_query("vision", mini, [image], no_model)
    assert float(vision[0] @ encoder.encode_images([image])[0]) >= 0.9999


def test_without_a_cached_tower_the_full_encoder_embeds_and_caches_it(cache_dir, mini):
    loads = []

    def load():
        loads.append(1)
        return _load_model(mini)

    first = encode_query("text", mini, ["a red circle"], load)
    second = encode_query("text", mini, ["a red circle"], load)
    assert len(loads) == 1  # loading cached the tower, which embedded the first query already
    assert np.array_equal(first, second)


def test_an_unwritable_cache_leaves_search_on_the_full_encoder(tmp_path, monkeypatch, mini, photo_folder):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(tower_cache.CACHE_ENV, str(blocker / "cache"))
    store = clipstore.connect(tmp_path / "s.clipstore", model=MINI)
    store.ingest(photo_folder)
    _load_model(mini)  # the hook cannot write: no error
    assert cached_tower("text", mini) is None
    expected = store.search_vector(store.encoder.encode_texts(["a red circle"])[0], k=3)
    assert store.search_text("a red circle", k=3) == expected


def test_a_cached_store_searches_without_loading_the_model_or_probing_the_network(cache_dir, mini, photo_folder, tmp_path, monkeypatch):
    store = clipstore.connect(tmp_path / "s.clipstore", model=MINI)
    store.ingest(photo_folder)
    _load_model(mini)
    expected_text = store.search_text("a red circle", k=3)
    expected_image = store.search_image(photo_folder / "a" / "img1.png", k=3)

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded or the network probed")

    monkeypatch.setattr("clipstore.encoders.clip.create_model", refuse)
    monkeypatch.setattr("clipstore.encoders.clip.load_clip_encoder", refuse)
    monkeypatch.setattr("clipstore.encoders.weights.ensure_weights_obtainable", refuse)
    reopened = clipstore.connect(store.path)
    assert reopened.search_text("a red circle", k=3) == expected_text
    assert reopened.search_image(photo_folder / "a" / "img1.png", k=3) == expected_image
    assert expected_image[0].path == str(photo_folder / "a" / "img1.png")


def test_a_model_without_numpy_towers_searches_with_the_full_encoder(cache_dir, variants, photo_folder, tmp_path):
    store = clipstore.connect(tmp_path / "s.clipstore", model="cs-qknorm:random")
    store.ingest(photo_folder)
    _load_model(store.model)
    assert not any(cache_dir.rglob("*.safetensors"))
    hits = store.search_text("a red circle", k=3)
    assert hits == store.search_vector(store.encoder.encode_texts(["a red circle"])[0], k=3)
