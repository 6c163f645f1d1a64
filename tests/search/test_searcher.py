"""Search: text->image and image->image ranking, query forms, k and path-prefix filters."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import clipstore
from image_factory import pattern_image, write_image


@pytest.fixture
def filled(store, photo_folder):
    store.ingest(photo_folder)
    return store


def test_an_image_searched_by_itself_ranks_first_with_score_about_one(filled, photo_folder):
    for path in sorted(photo_folder.rglob("*.png")):
        hits = filled.search_image(path, k=3)
        assert hits[0].path == str(path)
        assert hits[0].score == pytest.approx(1.0, abs=2e-3)
        assert hits[0].score >= hits[1].score >= hits[2].score


def test_image_query_accepts_bytes_and_pil(filled, photo_folder):
    path = photo_folder / "a" / "img3.png"
    by_bytes = filled.search_image(path.read_bytes(), k=1)[0]
    by_pil = filled.search_image(Image.open(io.BytesIO(path.read_bytes())), k=1)[0]
    assert by_bytes.path == by_pil.path == str(path)
    assert by_bytes.score == pytest.approx(1.0, abs=2e-3)


def test_text_search_returns_k_hits_best_first_with_cosine_scores(filled):
    hits = filled.search_text("a red circle", k=4)
    assert len(hits) == 4
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert len({hit.id for hit in hits}) == 4
    assert len(filled.search_text("a red circle", k=100)) == 6


def test_scores_are_the_cosine_of_the_stored_vectors(filled):
    text_vector = filled.encoder.encode_texts(["a blue square"])[0]
    hits = filled.search_vector(text_vector * 7.0, k=6)  # any norm: the query is normalised
    table = filled.db.open_table("images").to_arrow().to_pylist()
    stored = {row["id"]: np.asarray(row["embedding"]) for row in table}
    for hit in hits:
        assert hit.score == pytest.approx(float(stored[hit.id] @ text_vector), abs=1e-5)


def test_path_prefix_limits_hits(filled, photo_folder):
    hits = filled.search_image(photo_folder / "a" / "img1.png", k=10, path_prefix=str(photo_folder / "b") + "/")
    assert len(hits) == 3
    assert all(hit.path.startswith(str(photo_folder / "b") + "/") for hit in hits)


def test_duplicate_content_is_one_hit(store, tmp_path):
    write_image(tmp_path / "p" / "one.png", pattern_image(1))
    (tmp_path / "p" / "two.png").write_bytes((tmp_path / "p" / "one.png").read_bytes())
    write_image(tmp_path / "p" / "other.png", pattern_image(2))
    store.ingest(tmp_path / "p")
    hits = store.search_image(tmp_path / "p" / "two.png", k=10)
    assert len(hits) == 2
    assert hits[0].path == str(tmp_path / "p" / "one.png")  # first path of that content, sorted


def test_search_sees_rows_written_by_another_connection(store, store_path, photo_folder):
    assert store.search_text("anything") == []
    other = clipstore.connect(store_path)
    other.ingest(photo_folder)
    assert len(store.search_text("anything", k=10)) == 6


def test_bad_image_query_is_a_clear_error(filled, tmp_path):
    (tmp_path / "bad.png").write_text("nope")
    with pytest.raises(clipstore.InvalidImageError, match="not an image"):
        filled.search_image(tmp_path / "bad.png")
    with pytest.raises(clipstore.InvalidImageError, match="missing.png"):
        filled.search_image(tmp_path / "missing.png")


def test_image_query_path_may_use_tilde(filled, photo_folder, monkeypatch):
    monkeypatch.setenv("HOME", str(photo_folder))
    assert filled.search_image("~/a/img3.png", k=1)[0].path == str(photo_folder / "a" / "img3.png")
