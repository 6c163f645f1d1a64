"""A clipstore store's own tables read by plain LanceDB, DuckDB and Polars: the calls the README shows, checked
against what the Store API says about the same store."""

from __future__ import annotations

from pathlib import Path

import lancedb
import pytest

import clipstore
from clipstore.db import tables
from mini_model import DEFAULT_MINI

MINI = "clipstore-mini"
EXTRAS = "an optional test dependency: pip install 'clipstore[lancedb-extras]' (or '.[dev]')"


@pytest.fixture
def photo_store(tmp_path: Path, photos) -> "clipstore.Store":
    """The six photos ingested (one of them twice, under two names), and two prompts in the bank."""
    (tmp_path / "photos" / "copy-of-p0.png").write_bytes(photos[0].read_bytes())
    store = clipstore.connect(tmp_path / "photos.clipstore", model=MINI)
    store.ingest(tmp_path / "photos")
    store.add_prompts(["a red circle on white", "three blue squares"])
    return store


def test_plain_lancedb_reads_the_tables_and_searches_like_the_store(photo_store):
    db = lancedb.connect(photo_store.path)
    images = tables.open_images(db)
    files = db.open_table("files")
    prompts = tables.open_prompts(db)
    assert (images.count_rows(), files.count_rows(), prompts.count_rows()) == (6, 7, 2)
    assert prompts.schema.field("minilm_embedding").type.list_size == 384

    vector = photo_store.encoder.encode_texts(["a green triangle"])[0]
    found = images.search(vector).distance_type("cosine").limit(6).select(["id", "_distance"]).to_list()
    expected = photo_store.search_vector(vector, k=6, exact=True)
    assert [row["id"] for row in found] == [hit.id for hit in expected]
    assert [1 - row["_distance"] for row in found] == pytest.approx([hit.score for hit in expected], abs=1e-5)


def test_duckdb_joins_files_and_images(photo_store):
    duckdb = pytest.importorskip("duckdb", reason=f"duckdb is {EXTRAS}")
    pytest.importorskip("lance", reason=f"pylance (for to_lance) is {EXTRAS}")
    db = lancedb.connect(photo_store.path)
    con = duckdb.connect()
    con.register("images", tables.open_images(db).to_lance())
    con.register("files", db.open_table("files").to_lance())
    rows = con.sql(
        "SELECT f.path, i.id, i.width FROM files f JOIN images i ON f.image_id = i.id WHERE i.width >= 96 ORDER BY f.path"
    ).fetchall()
    assert len(rows) == 7 and {width for _, _, width in rows} == {96}
    for path, image_id, _ in rows:
        assert path in photo_store.image_paths(image_id)
    shared = con.sql("SELECT image_id, count(*) AS n FROM files GROUP BY image_id HAVING n > 1").fetchall()
    assert [n for _, n in shared] == [2]  # the copy shares its original's image row

    con.register("images_in_memory", tables.open_images(db).to_arrow())  # without pylance: the table in memory
    assert con.sql("SELECT count(*) FROM images_in_memory").fetchall() == [(6,)]


def test_polars_reads_the_tables_lazily(photo_store):
    pl = pytest.importorskip("polars", reason=f"polars is {EXTRAS}")
    db = lancedb.connect(photo_store.path)
    files = db.open_table("files").to_polars()
    images = tables.open_images(db).to_polars()
    assert isinstance(files, pl.LazyFrame)
    joined = files.join(images, left_on="image_id", right_on="id").select("path", "width", "height", "embedding").collect()
    assert joined.height == 7 and joined["embedding"].dtype == pl.Array(pl.Float32, 256)
    bank = tables.open_prompts(db).search().select(["text", "source"]).limit(None).to_polars()
    assert sorted(bank["text"].to_list()) == ["a red circle on white", "three blue squares"]


def test_after_a_model_switch_open_images_names_the_current_table(photo_store):
    photo_store.reembed("clipstore-mini:random")
    db = lancedb.connect(photo_store.path)
    current = tables.open_images(db)
    assert current.name.startswith("images__") and "images" in tables.table_names(db)  # the old table stays for rollback
    assert tables.stored_model(current).spec == "clipstore-mini:random"
    assert tables.stored_model(db.open_table("images")).spec == DEFAULT_MINI
    vector = photo_store.encoder.encode_texts(["a green triangle"])[0]
    found = current.search(vector).distance_type("cosine").limit(3).select(["id", "_distance"]).to_list()
    assert [row["id"] for row in found] == [hit.id for hit in photo_store.search_vector(vector, k=3, exact=True)]
