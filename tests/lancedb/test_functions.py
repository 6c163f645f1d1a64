"""clipstore.lancedb.functions: the "clipstore" and "clipstore-prompts" embedding functions inside real LanceDB
tables (LanceModel schemas, as a LanceDB user writes them), with the real clipstore-mini model and MiniLM."""

# No `from __future__ import annotations` here: pydantic reads the LanceModel annotations below as they are.

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import lancedb
import numpy as np
import pytest
from lancedb.embeddings import get_registry
from lancedb.pydantic import LanceModel, Vector
from PIL import Image

import clipstore
import clipstore.lancedb
from clipstore.db import tables
from clipstore.encoders import clip as clip_module
from clipstore.encoders.identity import DEFAULT_MODEL, MINI_WEIGHTS_SHA256, bundled_mini_weights
from clipstore.encoders.minilm import load_minilm_encoder
from clipstore.errors import InvalidImageError, InvalidOptionError, ModelMismatchError, ModelSpecError
from clipstore.lancedb.functions import _spec_vectors
from image_factory import pattern_image, write_image
from mini_model import DEFAULT_MINI

MINI = "clipstore-mini"
REPO = Path(__file__).resolve().parents[2]


def products_table(db, clip, *, image_bytes=False, name="products"):
    """The app's table: a sku, the image (a path, or the image's bytes), and its clipstore vector."""
    if image_bytes:

        class Product(LanceModel):
            sku: str
            image: bytes = clip.SourceField()
            vector: Vector(clip.ndims()) = clip.VectorField()

    else:

        class Product(LanceModel):
            sku: str
            image: str = clip.SourceField()
            vector: Vector(clip.ndims()) = clip.VectorField()

    return db.create_table(name, schema=Product)


def rows_of(table, *columns):
    return sorted(table.search().select(list(columns)).limit(None).to_list(), key=lambda row: row[columns[0]])


def ranked(query_builder):
    """(sku, cosine similarity) best first, from a query made with distance_type("cosine")."""
    return [(row["sku"], 1.0 - row["_distance"]) for row in query_builder.select(["sku", "_distance"]).to_list()]


# --- registration -----------------------------------------------------------------------------------------------


def test_importing_registers_both_functions_without_loading_a_model(tmp_path):
    code = textwrap.dedent(
        """
        import sys, lancedb, clipstore.lancedb
        from lancedb.embeddings import get_registry
        print(get_registry().get("clipstore").__name__, get_registry().get("clipstore-prompts").__name__)
        print(lancedb.__file__)
        print(sorted(m for m in ("torch", "open_clip", "sentence_transformers", "transformers") if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout.split("\n")
    assert out[0] == "ClipstoreEmbeddings PromptEmbeddings"
    # `clipstore.lancedb` never shadows LanceDB itself, in a fresh interpreter nor in this one.
    for location in (out[1], lancedb.__file__):
        assert Path(location).parent.name == "lancedb" and REPO not in Path(location).parents
    assert out[2] == "[]"


def test_fields_are_json_values_that_record_the_model():
    registry = get_registry().get("clipstore")
    clip = registry.create(model=MINI)
    assert clip.max_retries == 0 and clip.ndims() == 256
    assert clip.safe_model_dump() == {"model": MINI, "weights": DEFAULT_MINI}
    assert json.loads(json.dumps(clip.safe_model_dump())) == clip.safe_model_dump()
    assert registry.create().safe_model_dump()["model"] == DEFAULT_MODEL  # recorded by name, never implied
    with pytest.raises(InvalidOptionError, match="not both"):
        registry.create(model=MINI, store="somewhere")
    with pytest.raises(InvalidOptionError, match="precision"):
        registry.create(model=MINI, precision="fp8")
    with pytest.raises(ModelSpecError, match="Unknown model architecture"):
        registry.create(model="no-such-arch:x")


# --- images in, vectors out -----------------------------------------------------------------------------------


def test_rows_are_embedded_on_add_and_ranked_like_clipstore_search(tmp_path, photos):
    clip = get_registry().get("clipstore").create(model=MINI)
    table = products_table(lancedb.connect(tmp_path / "shop.lance"), clip)
    table.add([{"sku": f"sku-{i}", "image": str(path)} for i, path in enumerate(photos)])
    store = clipstore.connect(tmp_path / "same.clipstore", model=MINI)
    store.ingest(tmp_path / "photos")
    sku_of = {str(path): f"sku-{i}" for i, path in enumerate(photos)}

    # The vectors are the ones clipstore's own ingest makes from the same files.
    mine = {row["sku"]: np.array(row["vector"]) for row in rows_of(table, "sku", "vector")}
    theirs = {row["id"]: np.array(row["embedding"]) for row in tables.read_columns(tables.open_images(store.db), ["id", "embedding"]).to_pylist()}
    for path in photos:
        assert np.allclose(mine[sku_of[str(path)]], theirs[hashlib.sha256(path.read_bytes()).hexdigest()], atol=1e-6)
    for query in ("a red triangle on a blue background", "green and yellow ellipses"):
        expected = [(sku_of[hit.path], hit.score) for hit in store.search_text(query, k=6)]
        found = ranked(table.search(query).distance_type("cosine").limit(6))
        assert [sku for sku, _ in found] == [sku for sku, _ in expected]
        assert [score for _, score in found] == pytest.approx([score for _, score in expected], abs=1e-4)
        # The default metric (squared L2) ranks unit vectors the same way: cosine = 1 - distance / 2.
        l2 = table.search(query).limit(6).select(["sku", "_distance"]).to_list()
        assert [row["sku"] for row in l2] == [sku for sku, _ in expected]
        assert [1 - row["_distance"] / 2 for row in l2] == pytest.approx([score for _, score in expected], abs=1e-4)

    # Image queries: a PIL image, a path object and raw bytes find the same photo first, with cosine ~1.
    for query in (Image.open(photos[3]), photos[3], photos[3].read_bytes()):
        best = ranked(table.search(query).distance_type("cosine").limit(2))
        assert best[0][0] == "sku-3" and best[0][1] == pytest.approx(1.0, abs=1e-3) and best[1][1] < 0.99
    with pytest.raises(InvalidImageError, match="no such file"):
        table.search(tmp_path / "nope.png")


def test_a_bytes_column_gets_the_same_vectors_as_paths(tmp_path, photos):
    clip = get_registry().get("clipstore").create(model=MINI)
    db = lancedb.connect(tmp_path / "shop.lance")
    by_path = products_table(db, clip)
    by_bytes = products_table(db, clip, image_bytes=True, name="products_bytes")
    by_path.add([{"sku": f"sku-{i}", "image": str(path)} for i, path in enumerate(photos)])
    by_bytes.add([{"sku": f"sku-{i}", "image": path.read_bytes()} for i, path in enumerate(photos)])
    assert by_bytes.schema.field("image").type == "binary"
    for a, b in zip(rows_of(by_path, "sku", "vector"), rows_of(by_bytes, "sku", "vector")):
        assert a["sku"] == b["sku"] and np.allclose(a["vector"], b["vector"], atol=1e-6)
    assert ranked(by_bytes.search(Image.open(photos[4])).distance_type("cosine").limit(1))[0][0] == "sku-4"


def test_an_unreadable_image_gets_a_null_vector_and_on_bad_vectors_decides(tmp_path, photos, broken, caplog):
    clip = get_registry().get("clipstore").create(model=MINI)
    table = products_table(lancedb.connect(tmp_path / "shop.lance"), clip)
    rows = [{"sku": f"sku-{i}", "image": str(path)} for i, path in enumerate(photos[:3])]
    rows += [{"sku": f"bad-{name}", "image": str(path)} for name, path in broken.items()]

    with pytest.raises(Exception, match="on_bad_vectors='null'"):  # LanceDB's default: the whole add fails
        table.add(rows)
    assert table.count_rows() == 0

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="clipstore.lancedb"):
        table.add(rows, on_bad_vectors="null")
    assert table.count_rows() == 6 and table.count_rows("vector IS NULL") == 3
    assert {row["sku"] for row in rows_of(table, "sku", "vector") if row["vector"] is None} == {f"bad-{n}" for n in broken}
    (warning,) = [record.getMessage() for record in caplog.records if record.name == "clipstore.lancedb"]
    assert warning.startswith("3 of 6 images got no vector")
    assert all(part in warning for part in ("truncated.jpg", "notes.jpg: not an image (looks like text)", "gone.png", "no such file"))
    found = [sku for sku, _ in ranked(table.search("a picture").distance_type("cosine").limit(10))]
    assert sorted(found) == ["sku-0", "sku-1", "sku-2"]  # rows without a vector are never search results

    dropped = products_table(lancedb.connect(tmp_path / "shop.lance"), clip, name="dropped")
    dropped.add(rows, on_bad_vectors="drop")
    assert [row["sku"] for row in rows_of(dropped, "sku")] == ["sku-0", "sku-1", "sku-2"]

    # Fixed files: a merge of their rows without vectors embeds them (the README's advice).
    write_image(broken["text"], pattern_image(40), format="JPEG")
    table.merge_insert("sku").when_matched_update_all().execute([{"sku": "bad-text", "image": str(broken["text"])}])
    assert table.count_rows("vector IS NULL") == 2 and table.count_rows() == 6


def test_the_model_loads_once_per_process(tmp_path, photos, monkeypatch):
    from clipstore.encoders import torch_tower

    monkeypatch.setattr(clip_module, "_cache", {})  # as in a fresh process
    monkeypatch.setattr(torch_tower, "_towers", {})
    made = []

    def counting(cls):
        original = cls.__init__

        def init(self, *args, **kwargs):
            made.append((cls.__name__, args[0].spec))
            original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", init)

    counting(clip_module.ClipEncoder)
    counting(torch_tower.TorchVisionTower)
    clip = get_registry().get("clipstore").create(model=MINI)
    db = lancedb.connect(tmp_path / "shop.lance")
    table = products_table(db, clip)
    for start in (0, 3):  # every add builds its function again from the table's metadata
        table.add([{"sku": f"sku-{i}", "image": str(photos[i])} for i in range(start, start + 3)])
    reopened = db.open_table("products")
    reopened.add([{"sku": "sku-again", "image": str(photos[0])}])
    reopened.search(Image.open(photos[1])).limit(1).to_list()
    # The images are embedded by the model's cached vision tower (ingest's embedder), made once; the full model
    # is loaded at most once, only when this machine had not cached the tower yet.
    assert made.count(("TorchVisionTower", DEFAULT_MINI)) == 1
    assert made.count(("ClipEncoder", DEFAULT_MINI)) <= 1 and len(made) <= 2


def test_errors_reach_the_caller_as_they_are_not_as_retries(tmp_path, photos):
    checkpoint = tmp_path / "mini-copy.safetensors"
    shutil.copyfile(bundled_mini_weights(), checkpoint)
    clip = get_registry().get("clipstore").create(model=f"clipstore-mini:{checkpoint}")
    assert clip.weights == f"clipstore-mini:sha256:{MINI_WEIGHTS_SHA256[:12]}"
    table = products_table(lancedb.connect(tmp_path / "shop.lance"), clip)
    table.add([{"sku": "sku-0", "image": str(photos[0])}])

    checkpoint.write_bytes(b"other weights")  # the file the table's vectors came from changed
    _spec_vectors.cache_clear()  # what a new process would see
    with pytest.raises(ModelMismatchError, match="Restore the checkpoint file"):
        table.search("a red square")
    with pytest.raises(Exception) as raised:  # raised while LanceDB streams the rows: it reaches the caller in LanceDB's wrapper
        table.add([{"sku": "sku-1", "image": str(photos[1])}])
    assert "Restore the checkpoint file" in str(raised.value) and "Maximum number of retries" not in str(raised.value)
    assert table.count_rows() == 1


# --- a store's model --------------------------------------------------------------------------------------------


def test_a_store_lends_its_current_model_and_a_switch_is_refused(tmp_path, photos):
    store = clipstore.connect(tmp_path / "photos.clipstore", model=MINI)
    store.ingest(tmp_path / "photos")
    clip = get_registry().get("clipstore").create(store=store)
    assert clip.safe_model_dump() == {"store": store.path, "weights": DEFAULT_MINI}
    table = products_table(lancedb.connect(tmp_path / "shop.lance"), clip)
    table.add([{"sku": f"sku-{i}", "image": str(path)} for i, path in enumerate(photos)])
    assert ranked(table.search("blue").distance_type("cosine").limit(6))[0][0] == "sku-" + str(
        photos.index(Path(store.search_text("blue", k=1)[0].path))
    )

    store.reembed("clipstore-mini:random")  # the store switches to another model
    with pytest.raises(ModelMismatchError, match="clipstore rollback"):
        table.search("blue")
    switched = get_registry().get("clipstore").create(store=store.path)
    assert switched.weights == "clipstore-mini:random" and switched.ndims() == 256
    store.rollback()
    assert len(ranked(table.search("blue").distance_type("cosine").limit(6))) == 6


# --- prompts ----------------------------------------------------------------------------------------------------


def test_the_prompts_function_embeds_text_columns_with_minilm(tmp_path):
    prompts = get_registry().get("clipstore-prompts").create()
    assert prompts.ndims() == 384 and prompts.safe_model_dump() == {}

    class Caption(LanceModel):
        id: int
        text: Optional[str] = prompts.SourceField()
        vector: Vector(prompts.ndims()) = prompts.VectorField()

    table = lancedb.connect(tmp_path / "captions.lance").create_table("captions", schema=Caption)
    texts = ["a red circle on a white background", "a photo of a sleeping dog", "three blue squares", None]
    table.add([{"id": i, "text": text} for i, text in enumerate(texts)], on_bad_vectors="null")
    stored = [row["vector"] for row in rows_of(table, "id", "vector")]
    assert stored[3] is None
    assert np.allclose(np.array(stored[:3]), load_minilm_encoder().encode(texts[:3]), atol=1e-5)
    best = table.search("a puppy taking a nap").distance_type("cosine").limit(1).select(["text"]).to_list()[0]
    assert best["text"] == "a photo of a sleeping dog"


# --- a new process ----------------------------------------------------------------------------------------------


def _python(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=tmp_path, timeout=300)


@pytest.mark.slow
def test_a_table_reopened_in_a_new_process_rebuilds_its_function_only_after_the_import(tmp_path, photos):
    made = _python(
        tmp_path,
        """
        import lancedb, clipstore.lancedb
        from lancedb.embeddings import get_registry
        from lancedb.pydantic import LanceModel, Vector

        clip = get_registry().get("clipstore").create(model="clipstore-mini")
        class Product(LanceModel):
            sku: str
            image: str = clip.SourceField()
            vector: Vector(clip.ndims()) = clip.VectorField()

        table = lancedb.connect("shop.lance").create_table("products", schema=Product)
        table.add([{"sku": f"sku-{i}", "image": f"photos/p{i}.{'jpg' if i % 2 else 'png'}"} for i in range(5)])
        print(table.search("red and green").limit(1).select(["sku", "_distance"]).to_list()[0]["sku"])
        """,
    )
    assert made.returncode == 0, made.stderr
    reopened = _python(
        tmp_path,
        """
        import lancedb, clipstore.lancedb
        from PIL import Image

        table = lancedb.connect("shop.lance").open_table("products")
        print(table.search("red and green").limit(1).select(["sku", "_distance"]).to_list()[0]["sku"])
        table.add([{"sku": "sku-5", "image": "photos/p5.jpg"}])
        print(table.search(Image.open("photos/p5.jpg")).limit(1).select(["sku", "_distance"]).to_list()[0]["sku"])
        print(table.count_rows("vector IS NOT NULL"))
        """,
    )
    assert reopened.returncode == 0, reopened.stderr
    assert reopened.stdout.split() == [made.stdout.strip(), "sku-5", "6"]

    without = _python(
        tmp_path,
        """
        import lancedb
        table = lancedb.connect("shop.lance").open_table("products")
        # Reading works; anything that needs the function does not.
        print(table.count_rows(), table.to_arrow().num_rows, len(table.search([0.0] * 256).limit(2).to_list()))
        table.search("red and green").limit(1).to_list()
        """,
    )
    assert without.returncode == 1 and without.stdout.split() == ["6", "6", "2"]
    last_line = without.stderr.strip().splitlines()[-1]
    assert last_line == "KeyError: 'clipstore'" and f"\n{last_line}\n" in (REPO / "README.md").read_text(encoding="utf-8")


# --- object storage ---------------------------------------------------------------------------------------------


def test_an_app_table_on_object_storage_embeds_with_a_store_there(s3, photos, broken, monkeypatch):
    """The app's table and the clipstore store that lends its model both live on the local S3 server; the
    function reaches the store through the standard AWS variables (its fields hold no secrets)."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    store_uri = s3.uri("lender")
    clipstore.connect(store_uri, model=MINI)
    clip = get_registry().get("clipstore").create(store=store_uri)
    assert "secret" not in json.dumps(clip.safe_model_dump()).lower()
    shop = s3.uri("shop")
    table = products_table(lancedb.connect(shop, storage_options=s3.storage_options), clip)
    rows = [{"sku": f"sku-{i}", "image": str(path)} for i, path in enumerate(photos)]
    table.add(rows + [{"sku": "broken", "image": str(broken["truncated"])}], on_bad_vectors="null")

    reopened = lancedb.connect(shop, storage_options=s3.storage_options).open_table("products")
    vectors = {row["sku"]: row["vector"] for row in rows_of(reopened, "sku", "vector")}
    assert vectors["broken"] is None and all(vectors[f"sku-{i}"] is not None for i in range(len(photos)))
    best = ranked(reopened.search(photos[2]).distance_type("cosine").limit(2))
    assert best[0][0] == "sku-2" and best[0][1] == pytest.approx(1.0, abs=1e-3)
    assert len(ranked(reopened.search("a red triangle").distance_type("cosine").limit(3))) == 3
    assert any(key.startswith("products.lance/") for key in s3.keys(shop))
