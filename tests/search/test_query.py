"""Combined queries (`store.search`: a text, an image, negatives, weights) and the image lookups beside them
(`store.image`, `store.image_embedding`, `store.embed_image`), on a real rendered store."""

from __future__ import annotations

import numpy as np
import pytest

import clipstore
from clipstore.search.query import DEFAULT_WEIGHTS, combine, query_weights

MINI = "clipstore-mini"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A store of 48 render-world images (one folder per shape; each PNG carries its prompt)."""
    from clipstore.world import render_folder

    root = tmp_path_factory.mktemp("query")
    render_folder(root / "world", 48, seed=5)
    store = clipstore.connect(root / "s.clipstore", model=MINI)
    store.ingest(root / "world")
    return store


def assert_same_ranking(hits, expected):
    """The same images in the same order, with the same scores up to float32 rounding (two ways of computing
    one query vector differ in the last bits, so scores rounded to a fixed number of places can straddle a
    rounding boundary)."""
    assert [hit.id for hit in hits] == [hit.id for hit in expected]
    np.testing.assert_allclose([hit.score for hit in hits], [hit.score for hit in expected], rtol=0, atol=1e-5)


def test_a_text_alone_or_an_image_alone_is_the_plain_search(rendered):
    assert_same_ranking(rendered.search("a big red circle", k=8), rendered.search_text("a big red circle", k=8))
    path = rendered.search_text("a blue square", k=1)[0].path
    assert_same_ranking(rendered.search(image=path, k=8), rendered.search_image(path, k=8))
    with open(path, "rb") as file:  # bytes, and the embedding made once, give the same
        assert_same_ranking(rendered.search(image=file.read(), k=8), rendered.search_image(path, k=8))
    assert_same_ranking(rendered.search(image=rendered.embed_image(path), k=8), rendered.search_image(path, k=8))


def test_a_stored_image_embedding_finds_itself_first(rendered):
    hit = rendered.search_text("a green triangle", k=1)[0]
    vector = rendered.image_embedding(hit.id)
    assert vector.shape == (rendered.model.embed_dim,) and vector.dtype == np.float32
    first = rendered.search(image=vector, k=3)[0]
    assert first.id == hit.id and first.score == pytest.approx(1.0, abs=1e-5)


def test_a_negative_moves_the_results_away_from_what_it_names(rendered):
    text, negative = "a shape on a background", "red"
    plain = rendered.search(text, k=12)
    without = rendered.search(text, negative=negative, weights={"negative": 1.0}, k=12)
    assert [hit.id for hit in plain] != [hit.id for hit in without]

    def red_share(hits):  # how many hits the rendered prompt calls red
        return sum("red" in rendered.image(hit.id).prompt.split() for hit in hits)

    assert red_share(without) < red_share(plain)
    # The same query through the parts the API documents: w_text·T − w_negative·N, normalised.
    t, n = (rendered.context.embed_queries("text", [text, negative]))
    expected = rendered.search_vector((t - n) / np.linalg.norm(t - n), k=12)
    assert_same_ranking(without, expected)


def test_a_text_and_an_image_together(rendered):
    path = rendered.search_text("a yellow star", k=1)[0].path
    both = rendered.search("a blue square", image=path, k=10)
    t = rendered.context.embed_queries("text", ["a blue square"])[0]
    i = rendered.embed_image(path)
    assert_same_ranking(both, rendered.search_vector(t + i, k=10))
    heavy_image = rendered.search("a blue square", image=path, weights={"text": 0.0}, k=10)
    assert_same_ranking(heavy_image, rendered.search_image(path, k=10))


def test_several_negatives_and_blank_texts(rendered):
    hits = rendered.search("  a circle ", negative=["red", " ", "blue"], k=5)
    t, r, b = rendered.context.embed_queries("text", ["  a circle ", "red", "blue"])
    query = t - 0.5 * (r + b)
    assert_same_ranking(hits, rendered.search_vector(query, k=5))
    with pytest.raises(clipstore.InvalidOptionError, match="needs a text or an image"):
        rendered.search("   ", negative="red")


@pytest.mark.parametrize(
    "weights, message",
    [({"colour": 1.0}, "Unknown query weight 'colour'"), ({"text": -1}, "finite number >= 0"), ({"negative": float("nan")}, "finite")],
)
def test_weights_are_checked(rendered, weights, message):
    with pytest.raises(clipstore.InvalidOptionError, match=message):
        rendered.search("a circle", weights=weights)


def test_a_query_that_cancels_out_is_refused():
    vector = np.ones(4, np.float32)
    with pytest.raises(clipstore.InvalidOptionError, match="cancel out"):
        combine(vector, None, vector[None, :], query_weights({"negative": 1.0}))
    assert query_weights(None) == DEFAULT_WEIGHTS


def test_an_unreadable_query_image_is_an_invalid_image(rendered, tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    with pytest.raises(clipstore.InvalidImageError, match="not an image"):
        rendered.search("a circle", image=notes)


def test_image_record_holds_what_the_store_knows(rendered):
    hit = rendered.search_text("a red circle", k=1)[0]
    record = rendered.image(hit.id)
    assert isinstance(record, clipstore.ImageRecord)
    assert record.paths == tuple(rendered.image_paths(hit.id)) and record.paths[0] == hit.path
    from PIL import Image

    with Image.open(hit.path) as image:
        assert (record.width, record.height, record.format) == (*image.size, "PNG")
        assert image.info["parameters"].startswith(record.prompt + "\n")  # the positive prompt, as ingest reads it
        assert record.prompt_source == "png-parameters"
    import os

    assert record.file_size == os.path.getsize(hit.path) and record.added_at.endswith("+00:00")
    assert record.to_dict()["paths"] == list(record.paths)
    assert rendered.image("0" * 64) is None and rendered.image_embedding("0" * 64) is None
