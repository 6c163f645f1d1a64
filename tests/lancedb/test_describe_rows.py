"""clipstore.lancedb.describe: a store's describe ensemble captions the rows of an app's own LanceDB table."""

# No `from __future__ import annotations` here: pydantic reads the LanceModel annotations below as they are.

from typing import Optional

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from lancedb.embeddings import get_registry
from lancedb.pydantic import LanceModel, Vector

import clipstore
from clipstore.db import tables
from clipstore.encoders.minilm import load_minilm_encoder
from clipstore.errors import InvalidOptionError, NothingToDescribeWithError
from clipstore.lancedb import DESCRIBE_ROWS_STAGE, describe
from clipstore.lancedb.sources import NULL_IMAGE

MINI = "clipstore-mini"


def by_sku(table, *columns):
    return {row["sku"]: row for row in table.search().select(["sku", *columns]).limit(None).to_list()}


def bank_vectors(store):
    rows = tables.read_columns(tables.open_prompts(store.db), ["text", "minilm_embedding"]).to_pylist()
    return {row["text"]: np.array(row["minilm_embedding"]) for row in rows}


def test_describe_writes_the_ensemble_prompt_its_embedding_score_and_failures(tmp_path, caption_store, catalogue, broken):
    clip = get_registry().get("clipstore").create(store=caption_store.path)

    class Product(LanceModel):
        sku: str
        image: str = clip.SourceField()
        vector: Vector(clip.ndims()) = clip.VectorField()

    table = lancedb.connect(tmp_path / "shop.lance").create_table("products", schema=Product)
    table.add([{"sku": p["sku"], "image": p["image"]} for p in catalogue], on_bad_vectors="null")
    table.add([{"sku": "bad-text", "image": str(broken["text"])}, {"sku": "bad-missing", "image": str(broken["missing"])}], on_bad_vectors="null")
    vectors_before = {sku: row["vector"] for sku, row in by_sku(table, "vector").items()}
    calls = []

    report = describe(table, store=caption_store.path, column="caption", alpha=0.5, batch_size=4, progress=lambda *a: calls.append(a))

    assert (report.described, report.already_described, report.failed) == (8, 0, 2)
    assert report.method == "ensemble" and report.head == caption_store.heads()[0].id
    assert (report.column, report.embedding_column, report.score_column, report.error_column) == ("caption", "caption_embedding", "caption_score", "caption_error")
    assert calls == [(DESCRIBE_ROWS_STAGE, done, 10) for done in (4, 8, 10)]  # batches of 4 rows
    assert table.schema.field("caption_embedding").type == pa.list_(pa.float32(), 384)
    rows = by_sku(table, "image", "vector", "caption", "caption_embedding", "caption_score", "caption_error")
    bank = bank_vectors(caption_store)
    for product in catalogue:
        row = rows[product["sku"]]
        expected = caption_store.describe(product["image"], alpha=0.5, top=1).prompts[0]
        assert row["caption"] == expected.text and row["caption_score"] == pytest.approx(expected.score, abs=1e-5)
        assert row["caption_error"] is None
        assert np.allclose(row["caption_embedding"], bank[row["caption"]], atol=1e-6)  # the prompt's own embedding
        assert float(np.dot(row["caption_embedding"], load_minilm_encoder().encode([row["caption"]])[0])) > 0.999
    assert rows["bad-text"]["caption"] is None and rows["bad-text"]["caption_embedding"] is None
    assert rows["bad-text"]["caption_error"] == "not an image (looks like text)"
    assert "no such file" in rows["bad-missing"]["caption_error"]
    assert {sku: row["vector"] for sku, row in rows.items()} == vectors_before  # the app's own columns are untouched

    # A second run describes nothing again (failed rows are tried again); a manual caption is kept, unless
    # asked to overwrite; rows added later are described by the next run.
    table.update(where="sku = 'sku-0'", values={"caption": "hand-written"})
    again = describe(table, store=caption_store, column="caption", alpha=0.5)
    assert (again.described, again.already_described, again.failed, again.method) == (0, 8, 2, None)
    assert by_sku(table, "caption")["sku-0"]["caption"] == "hand-written"
    table.add([{"sku": "sku-new", "image": catalogue[2]["image"]}])
    later = describe(table, store=caption_store, column="caption", alpha=0.5)
    assert later.described == 1 and by_sku(table, "caption")["sku-new"]["caption"] == rows["sku-2"]["caption"]
    overwritten = describe(table, store=caption_store, column="caption", alpha=0.5, overwrite=True)
    assert (overwritten.described, overwritten.already_described) == (9, 0)
    assert by_sku(table, "caption")["sku-0"]["caption"] == rows["sku-0"]["caption"]


def test_bytes_images_and_a_prompts_function_on_the_caption_column(tmp_path, caption_store, catalogue):
    clip = get_registry().get("clipstore").create(store=caption_store.path)
    prompts = get_registry().get("clipstore-prompts").create()

    class Product(LanceModel):
        sku: str
        photo: bytes = clip.SourceField()
        vector: Vector(clip.ndims()) = clip.VectorField()
        caption: Optional[str] = prompts.SourceField()
        caption_vector: Vector(prompts.ndims()) = prompts.VectorField()

    table = lancedb.connect(tmp_path / "shop.lance").create_table("products", schema=Product)
    photos = {p["sku"]: open(p["image"], "rb").read() for p in catalogue[:4]}
    photos["sku-0-again"] = photos["sku-0"]  # two products, one photo
    table.add([{"sku": sku, "photo": data, "caption": None} for sku, data in photos.items()], on_bad_vectors="null")

    report = describe(table, store=caption_store, column="caption")
    assert report.embedding_column == "caption_vector" and "caption_embedding" not in table.schema.names
    assert report.described == 5 and report.failed == 0  # rows; the shared photo is described once, for both
    rows = by_sku(table, "caption", "caption_vector")
    assert rows["sku-0-again"]["caption"] == rows["sku-0"]["caption"] is not None
    assert all(row["caption_vector"] is not None for row in rows.values())

    # The caption column is searchable by meaning; with two vector columns LanceDB asks which one.
    hit = table.search(rows["sku-3"]["caption"], vector_column_name="caption_vector").distance_type("cosine").limit(1)
    assert hit.select(["caption", "_distance"]).to_list()[0]["caption"] == rows["sku-3"]["caption"]
    with pytest.raises(ValueError, match="more than one vector column"):
        table.search("a red circle")
    assert table.search("a red circle", vector_column_name="vector").limit(2).select(["sku", "_distance"]).to_list()


def test_describe_says_what_it_needs(tmp_path, caption_store, catalogue):
    db = lancedb.connect(tmp_path / "plain.lance")
    plain = db.create_table(
        "listing",
        pa.table({"sku": ["a", "b", "c"], "path": [catalogue[0]["image"], None, catalogue[1]["image"]], "stock": [1, 2, 3]}),
    )
    with pytest.raises(InvalidOptionError, match="Pass image_column=NAME"):
        describe(plain, store=caption_store)
    with pytest.raises(InvalidOptionError, match="no such column"):
        describe(plain, store=caption_store, image_column="picture")
    with pytest.raises(InvalidOptionError, match="'stock'.*holds int64"):
        describe(plain, store=caption_store, image_column="path", column="stock")
    with pytest.raises(NothingToDescribeWithError, match="prompt bank .* is empty"):
        describe(plain, store=clipstore.connect(tmp_path / "empty.clipstore", model=MINI), image_column="path")

    report = describe(plain, store=caption_store, image_column="path", key="sku", where="sku != 'c'")
    assert (report.described, report.failed) == (1, 1)
    rows = {row["sku"]: row for row in plain.search().limit(None).to_list()}
    assert rows["a"]["prompt"] and rows["b"]["prompt"] is None and rows["b"]["prompt_error"] == NULL_IMAGE
    assert rows["c"]["prompt"] is None and rows["c"]["prompt_error"] is None  # outside `where`


def test_without_a_trained_head_model_b_describes_alone_and_says_so(tmp_path, catalogue):
    store = clipstore.connect(tmp_path / "bank-only.clipstore", model=MINI)
    store.add_prompts([p["drawn_from"] for p in catalogue])
    table = lancedb.connect(tmp_path / "plain.lance").create_table("t", pa.table({"image": [p["image"] for p in catalogue]}))
    report = describe(table, store=store, image_column="image")
    assert report.method == "model_b" and report.head is None and "No trained Model A" in report.notes[0]
    captions = {row["image"]: row["prompt"] for row in table.search().limit(None).to_list()}
    # Model B retrieves from the bank: images whose own prompt is in it are mostly described by that prompt.
    assert sum(captions[p["image"]] == p["drawn_from"] for p in catalogue) >= len(catalogue) // 2
