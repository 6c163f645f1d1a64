"""An existing LanceDB app — a product catalogue with columns of its own — that adds clipstore's image search and
captions to its own table (offline: the bundled clipstore-mini model and rendered images).

    python examples/lancedb_app.py [OUT] [--products 12]

1. a caption store: a clipstore store of rendered images whose prompts fill its prompt bank, with a Model A
   head trained on them (made once, reused by later runs);
2. the app's table: products (sku, name, price, photo path) in the app's own LanceDB database; the "clipstore"
   embedding function embeds each photo as the rows are added (one photo is broken: its row gets no vector);
3. text -> image and image -> image search on the app's table, through LanceDB's own `table.search`;
4. captions: `clipstore.lancedb.describe` writes each product's best bank prompt, its embedding and its score
   into the app's table, next to the app's own columns.
"""

from __future__ import annotations

import argparse
import json
import os

import lancedb
from lancedb.embeddings import get_registry
from lancedb.pydantic import LanceModel, Vector
from PIL import Image

import clipstore
import clipstore.lancedb  # registers the "clipstore" and "clipstore-prompts" embedding functions
from clipstore.world import render_folder


def caption_store(folder: str) -> clipstore.Store:
    """A clipstore-mini store whose bank holds the prompts of 150 rendered images, with a trained head."""
    store = clipstore.connect(os.path.join(folder, "captions.clipstore"), model="clipstore-mini")
    if not store.heads():
        reference = render_folder(os.path.join(folder, "reference"), 150, seed=7)
        store.ingest(reference.folder)
        store.train(freeze_vision=True, epochs=8)
    return store


def product_table(db: lancedb.DBConnection, store: clipstore.Store):
    """The app's own table; its photos are embedded by the store's model."""
    clip = get_registry().get("clipstore").create(store=store.path)

    class Product(LanceModel):
        sku: str
        name: str
        price: float
        photo: str = clip.SourceField()
        vector: Vector(clip.ndims()) = clip.VectorField()  # type: ignore[valid-type]

    db.drop_table("products", ignore_missing=True)  # the example starts its catalogue afresh on every run
    return db.create_table("products", schema=Product)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="lancedb-example")
    parser.add_argument("--products", type=int, default=12)
    args = parser.parse_args()

    store = caption_store(args.out)
    photos = render_folder(os.path.join(args.out, "photos"), args.products, seed=11)
    with open(photos.manifest, encoding="utf-8") as lines:
        paths = [os.path.join(photos.folder, json.loads(line)["path"]) for line in lines]
    broken = os.path.join(photos.folder, "broken.png")
    with open(broken, "w", encoding="utf-8") as handle:
        handle.write("this file lost its pixels\n")
    rows = [{"sku": f"sku-{i:03d}", "name": f"Poster {i}", "price": 9.5 + i, "photo": path} for i, path in enumerate(paths + [broken])]

    table = product_table(lancedb.connect(os.path.join(args.out, "shop.lance")), store)
    table.add(rows, on_bad_vectors="null")  # a photo that cannot be read leaves its row without a vector
    print(f"catalogue: {table.count_rows()} products ({table.count_rows('vector IS NULL')} photo unreadable: no vector)")

    query = "white circles on a dark green background"
    print(f"\ntext -> image {query!r}:")
    for row in table.search(query).distance_type("cosine").limit(3).select(["sku", "name", "_distance"]).to_list():
        print(f"  {row['sku']}  {row['name']:<10}  cosine {1 - row['_distance']:.3f}")
    print(f"\nimage -> image (like {rows[3]['sku']}):")
    for row in table.search(Image.open(paths[3])).distance_type("cosine").limit(3).select(["sku", "name", "_distance"]).to_list():
        print(f"  {row['sku']}  {row['name']:<10}  cosine {1 - row['_distance']:.3f}")

    report = clipstore.lancedb.describe(table, store=store, column="caption")
    print(f"\ncaptions: {report.described} described, {report.failed} failed ({report.method})")
    captions = table.search().select(["sku", "caption", "caption_score", "caption_error"]).limit(None).to_list()
    for row in sorted(captions, key=lambda row: row["sku"]):
        if row["caption"] is None:
            print(f"  {row['sku']}  no caption: {row['caption_error']}")
        else:
            print(f"  {row['sku']}  {row['caption']}  ({row['caption_score']:.3f})")
    # The table now has two vector columns (the photos' and the captions'): a search names the one it means.
    best = table.search(query, vector_column_name="vector").limit(1).select(["sku", "caption", "_distance"]).to_list()[0]
    print(f"\nbest match for {query!r}: {best['sku']}, captioned {best['caption']!r}")


if __name__ == "__main__":
    main()
