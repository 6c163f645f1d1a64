"""The optional vector index (`Store.build_index`, `clipstore index`) and the searches that use it, on real LanceDB
stores: clustered vectors written straight into a store's images and files tables, and real ingests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

import clipstore
from clipstore.cli import main
from clipstore.db import layout, tables, vector_index
from image_factory import pattern_image, write_image


def clustered(n: int, dim: int, *, clusters: int = 12, seed: int = 0) -> np.ndarray:
    """n unit vectors (n, dim) around `clusters` random centres (uniform noise makes every index look wrong)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def add_vectors(store: clipstore.Store, vectors: np.ndarray, *, start: int = 0, with_files: bool = True) -> list[str]:
    """Write one images row per vector (ids numbered from `start`) and, unless `with_files` is false (the state
    an interrupted ingest leaves), one file row each; returns the ids."""
    images = tables.open_images(store.db)
    ids = [f"{start + i:064x}" for i in range(len(vectors))]
    columns = {
        "id": pa.array(ids),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
    }
    schema = images.schema
    images.add(pa.Table.from_arrays([columns.get(f.name, pa.nulls(len(ids), f.type)) for f in schema], schema=schema))
    if with_files:
        files = store.db.open_table(layout.FILES)
        paths = {"path": pa.array([f"/virtual/{i}.png" for i in ids]), "image_id": pa.array(ids)}
        file_schema = layout.files_schema()
        files.add(pa.Table.from_arrays([paths.get(f.name, pa.nulls(len(ids), f.type)) for f in file_schema], schema=file_schema))
    return ids


@pytest.fixture
def vector_store(store) -> tuple[clipstore.Store, np.ndarray]:
    """A clipstore-mini store holding 300 clustered vectors with a file each (no index)."""
    vectors = clustered(300, store.model.embed_dim)
    add_vectors(store, vectors)
    return store, vectors


def queries(dim: int, n: int = 12) -> np.ndarray:
    return clustered(n, dim, seed=99)


def test_indexed_search_agrees_with_exact_search(vector_store):
    store, vectors = vector_store
    report = store.build_index()
    assert (report.action, report.index_type, report.rows_indexed, report.rows_not_indexed) == ("built", "IVF_HNSW_SQ", 300, 0)
    found = total = 0
    for query in queries(vectors.shape[1]):
        indexed = store.search_vector(query, 10)
        exact = store.search_vector(query, 10, exact=True)
        assert len(indexed) == 10
        found += len({h.id for h in indexed} & {h.id for h in exact})
        total += 10
        # Scores are cosine similarities, as the exact path gives them.
        exact_scores = {h.id: h.score for h in exact}
        for hit in indexed:
            if hit.id in exact_scores:
                assert hit.score == pytest.approx(exact_scores[hit.id], abs=1e-4)
        assert [h.score for h in indexed] == sorted((h.score for h in indexed), reverse=True)
    assert found / total >= 0.98


def test_without_an_index_search_is_exact_and_nothing_is_indexed(vector_store):
    store, vectors = vector_store
    query = queries(vectors.shape[1])[0]
    assert store.search_vector(query, 10) == store.search_vector(query, 10, exact=True)
    expected = np.argsort(-(vectors @ (query / np.linalg.norm(query))), kind="stable")[:10]
    assert [h.id for h in store.search_vector(query, 10)] == [f"{i:064x}" for i in expected]
    assert store.info().index is None
    assert list(tables.open_images(store.db).list_indices()) == []


def test_exact_bypasses_the_index(vector_store, monkeypatch):
    store, vectors = vector_store
    store.build_index()

    def refuse(*args, **kwargs):
        raise AssertionError("the index was queried")

    monkeypatch.setattr(vector_index, "indexed_search", refuse)
    query = queries(vectors.shape[1])[0]
    assert len(store.search_vector(query, 5, exact=True)) == 5
    assert len(store.search_vector(query, 5, path_prefix="/virtual/", exact=True)) == 5
    with pytest.raises(AssertionError, match="the index was queried"):
        store.search_vector(query, 5, path_prefix="/virtual/")  # a wide prefix goes through the index
    with pytest.raises(AssertionError, match="the index was queried"):
        store.search_vector(query, 5)


def test_rows_added_after_the_index_are_found_then_indexed_by_an_update(vector_store):
    store, vectors = vector_store
    store.build_index()
    later = clustered(20, vectors.shape[1], seed=7)
    later_ids = add_vectors(store, later, start=1000)
    assert store.info().index == {"name": layout.IMAGES_VECTOR_INDEX, "type": "IVF_HNSW_SQ", "rows_indexed": 300, "rows_not_indexed": 20}
    for vector, image_id in zip(later, later_ids):
        assert store.search_vector(vector, 3)[0].id == image_id
    report = store.build_index()
    assert (report.action, report.rows_indexed, report.rows_not_indexed) == ("updated", 320, 0)
    assert store.search_vector(later[0], 1)[0].id == later_ids[0]


def test_ingested_images_are_found_through_the_index(vector_store, photo_folder):
    store, _ = vector_store
    store.build_index()
    store.ingest(photo_folder)
    assert store.info().index["rows_not_indexed"] == 0  # the ingest brought the index up to date
    assert store.info().index["rows_indexed"] == 300 + 6
    photo = sorted(photo_folder.rglob("*.png"))[0]
    hit = store.search_image(photo, k=1)[0]
    assert hit.path == str(photo) and hit.score == pytest.approx(1.0, abs=1e-3)


def test_an_ingest_into_a_store_without_an_index_builds_none(store, photo_folder):
    store.ingest(photo_folder)
    assert store.info().index is None


def test_an_ingest_that_reaches_the_threshold_indexes_the_store(store, photo_folder, tmp_path):
    assert store.index_threshold == vector_index.DEFAULT_INDEX_THRESHOLD
    store.set_index_threshold(8)
    assert clipstore.connect(store.path).index_threshold == 8  # a store setting: every process sees it
    store.ingest(photo_folder)  # 6 images: below the threshold
    assert store.info().index is None
    more = tmp_path / "more"
    for seed in range(10, 13):
        write_image(more / f"img{seed}.png", pattern_image(seed))
    store.ingest(more)  # 9 images: past it
    assert store.info().index == {"name": layout.IMAGES_VECTOR_INDEX, "type": "IVF_HNSW_SQ", "rows_indexed": 9, "rows_not_indexed": 0}
    assert store.info().index_threshold == 8
    # The lookups indexed searches make (hit paths by image id, prefixes by path, vectors by id) are indexed too.
    files = store.db.open_table(layout.FILES)
    assert {tuple(c.columns) for c in files.list_indices()} == {("path",), ("image_id",)}
    assert ("id",) in {tuple(c.columns) for c in tables.open_images(store.db).list_indices()}
    photo = sorted(more.rglob("*.png"))[0]
    hit = store.search_image(photo, k=1)[0]
    assert hit.path == str(photo) and hit.score == pytest.approx(1.0, abs=1e-3)


def test_the_threshold_must_be_a_row_count(store):
    with pytest.raises(clipstore.InvalidOptionError, match="whole number"):
        store.set_index_threshold(-1)
    with pytest.raises(clipstore.InvalidOptionError):
        store.set_index_threshold(2.5)


def test_indexed_search_never_loads_the_whole_table(vector_store, monkeypatch):
    store, vectors = vector_store
    store.build_index()
    from clipstore.search.searcher import ImageSearcher

    def no_snapshot(self, images):
        raise AssertionError("the indexed path read every vector")

    monkeypatch.setattr(ImageSearcher, "_current", no_snapshot)
    query = queries(vectors.shape[1])[0]
    assert len(store.search_vector(query, 10)) == 10
    assert len(store.search_vector(query, 10, path_prefix="/virtual/0")) == 10
    with pytest.raises(AssertionError, match="every vector"):
        store.search_vector(query, 10, exact=True)


def _move_into_folders(store: clipstore.Store, folders: list[str]) -> dict[str, str]:
    """Rewrite every file row's path as <folder>/<name>, folder chosen round-robin; returns id -> new path."""
    files = store.db.open_table(layout.FILES)
    rows = tables.read_columns(files, ["path", "image_id"]).to_pylist()
    moved = {}
    for n, row in enumerate(sorted(rows, key=lambda r: r["image_id"])):
        moved[row["image_id"]] = f"{folders[n % len(folders)]}/{row['image_id'][-6:]}.png"
    files.delete("true")
    schema = layout.files_schema()
    columns = {"path": pa.array(list(moved.values())), "image_id": pa.array(list(moved))}
    files.add(pa.Table.from_arrays([columns.get(f.name, pa.nulls(len(moved), f.type)) for f in schema], schema=schema))
    return moved


@pytest.mark.parametrize("indexed", [False, True])
def test_prefix_filters_are_exact_wide_or_narrow(vector_store, indexed):
    store, vectors = vector_store
    # A wide folder (most images), a narrow one (3 images) and names that are wildcards to SQL's LIKE.
    folders = ["/data/wide"] * 50 + ["/data/100%_off"] * 3 + ["/data/wide'quoted"] * 4 + ["/data/wider"] * 3
    moved = _move_into_folders(store, folders)
    if indexed:
        store.build_index()
    one_image = sorted(moved.values())[0]  # so narrow that an indexed store compares with it exactly
    for prefix in ["/data/wide/", "/data/100%_off/", "/data/100", "/data/wide'quoted", "/data/wide", "/nowhere/", one_image]:
        expected = {i for i, path in moved.items() if path.startswith(prefix)}
        for query in queries(vectors.shape[1], 3):
            hits = store.search_vector(query, 10, path_prefix=prefix)
            assert all(h.path.startswith(prefix) and moved[h.id] == h.path for h in hits)
            assert len({h.id for h in hits}) == len(hits) == min(10, len(expected))
            # The best images under the prefix, as an exact comparison with each of them ranks them.
            exact = sorted(expected, key=lambda i: -float(vectors[int(i, 16)] @ query))[: len(hits)]
            assert len({h.id for h in hits} & set(exact)) >= 0.9 * len(hits)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_prefix_ranges_are_exact_for_any_characters():
    assert tables.prefix_filter("path", "/a/b") == "path >= '/a/b' AND path < '/a/c'"
    assert tables.prefix_filter("path", "it's/") == "path >= 'it''s/' AND path < 'it''s0'"
    assert tables.prefix_filter("path", "x\U0010ffff") == "path >= 'x\U0010ffff' AND path < 'y'"
    assert tables.prefix_filter("path", "\ud7ff") == "path >= '\ud7ff' AND path < '\ue000'"
    assert tables.prefix_filter("path", "") == "path >= ''"


@pytest.mark.slow
def test_a_process_killed_while_building_the_index_leaves_a_searchable_store(store, tmp_path):
    """kill -9 at several moments of an index build: every time the store still answers searches (exactly, or
    through the index as it was), and the next `build_index` finishes the job."""
    vectors = clustered(6000, store.model.embed_dim)
    add_vectors(store, vectors)
    query = queries(vectors.shape[1])[0]
    expected = [h.id for h in store.search_vector(query, 10, exact=True)]
    script = (
        "import sys, clipstore; s = clipstore.connect(sys.argv[1]); print('go', flush=True); "
        "s.build_index(rebuild=True)"
    )
    for delay in (0.1, 0.3, 0.6):  # the build takes ~0.7 s here
        child = subprocess.Popen([sys.executable, "-c", script, str(store.path)], cwd=tmp_path, stdout=subprocess.PIPE)
        assert child.stdout.readline().strip() == b"go"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        reopened = clipstore.connect(store.path)
        hits = reopened.search_vector(query, 10)
        assert len(hits) == 10 and len({h.id for h in hits} & set(expected)) >= 9
        assert [h.id for h in reopened.search_vector(query, 10, exact=True)] == expected
    # The write lock a killed builder held is released with its process; the next build completes.
    report = clipstore.connect(store.path).build_index()
    assert report.rows_indexed + report.rows_not_indexed == 6000
    final = clipstore.connect(store.path).build_index(rebuild=True)
    assert (final.rows_indexed, final.rows_not_indexed) == (6000, 0)
    assert len({h.id for h in clipstore.connect(store.path).search_vector(query, 10)} & set(expected)) >= 9


def test_reembed_indexes_the_new_table_and_rollback_returns_to_the_old_index(store, photo_folder):
    store.ingest(photo_folder)
    store.build_index()
    old_table = tables.active_tables(store.db)["images"]
    photo = sorted(photo_folder.rglob("*.png"))[0]

    store.reembed("clipstore-mini:random")
    switched = store.info().index
    assert tables.active_tables(store.db)["images"] != old_table
    assert switched is not None and switched["rows_indexed"] == 6 and switched["rows_not_indexed"] == 0
    assert store.search_image(photo, k=1)[0].path == str(photo)

    store.rollback()
    assert tables.active_tables(store.db)["images"] == old_table
    assert store.info().index is not None and store.info().index["rows_indexed"] == 6
    assert store.search_image(photo, k=1)[0].score == pytest.approx(1.0, abs=1e-3)


def test_reembed_of_a_store_without_an_index_adds_none(store, photo_folder):
    store.ingest(photo_folder)
    store.reembed("clipstore-mini:random")
    assert store.info().index is None


def test_images_without_a_file_row_do_not_shorten_the_hits(store):
    dim = store.model.embed_dim
    base = clustered(60, dim, clusters=1)
    add_vectors(store, base)
    # Rows of an interrupted ingest: no file row, and nearer the query than any linked row.
    query = base[0]
    add_vectors(store, np.repeat(query[None, :], 30, axis=0), start=500, with_files=False)
    store.build_index()
    hits = store.search_vector(query, 10)
    assert len(hits) == 10 and all(h.path.startswith("/virtual/") for h in hits)
    assert [h.id for h in hits] == [h.id for h in store.search_vector(query, 10, exact=True)]


def test_rebuild_replaces_the_index(vector_store):
    store, vectors = vector_store
    first = store.build_index()
    uuid = vector_index.vector_index(tables.open_images(store.db), "embedding").index_uuid
    add_vectors(store, clustered(10, vectors.shape[1], seed=3), start=2000)
    report = store.build_index(rebuild=True)
    configs = [c for c in tables.open_images(store.db).list_indices() if c.columns == ["embedding"]]
    assert (first.action, report.action, report.rows_indexed, report.rows_not_indexed) == ("built", "rebuilt", 310, 0)
    assert len(configs) == 1 and configs[0].index_uuid != uuid


def test_tiny_and_empty_stores(store):
    with pytest.raises(clipstore.IndexBuildError, match="Ingest a folder first"):
        store.build_index()
    vectors = clustered(3, store.model.embed_dim)
    ids = add_vectors(store, vectors)
    report = store.build_index()
    assert (report.num_partitions, report.rows_indexed) == (1, 3)
    assert [h.id for h in store.search_vector(vectors[1], 10)] == [h.id for h in store.search_vector(vectors[1], 10, exact=True)]
    assert store.search_vector(vectors[1], 1)[0].id == ids[1]


def test_progress_is_reported(vector_store):
    store, _ = vector_store
    calls = []
    store.build_index(progress=lambda *args: calls.append(args))
    assert calls == [("build index", 0, 1), ("build index", 1, 1)]


def test_cli_index_info_and_exact_search(vector_store):
    store, _ = vector_store
    runner = CliRunner()
    before = runner.invoke(main, ["info", "--store", store.path])
    assert before.exit_code == 0 and "index:      none" in before.output
    built = runner.invoke(main, ["index", "--store", store.path, "--json", "--quiet"])
    assert built.exit_code == 0, built.output
    report = json.loads(built.output)
    assert (report["action"], report["rows_indexed"], report["rows_not_indexed"]) == ("built", 300, 0)
    assert store.info().index["rows_indexed"] == 300  # seen through the Python API
    again = runner.invoke(main, ["index", "--store", store.path, "--rebuild", "--quiet"])
    assert again.exit_code == 0 and again.output.startswith("Index rebuilt on images (IVF_HNSW_SQ): 300 images indexed")
    info = runner.invoke(main, ["info", "--store", store.path, "--json"])
    assert json.loads(info.output)["index"]["type"] == "IVF_HNSW_SQ"
    text = "a red circle"
    indexed = runner.invoke(main, ["search", text, "--store", store.path, "--json"])
    exact = runner.invoke(main, ["search", text, "--store", store.path, "--json", "--exact"])
    assert indexed.exit_code == 0 and exact.exit_code == 0, (indexed.output, exact.output)
    expected = [h.to_dict() for h in store.search_text(text, k=10, exact=True)]
    assert json.loads(exact.output)["hits"] == expected
    assert len(json.loads(indexed.output)["hits"]) == 10


def test_cli_index_of_an_empty_store_is_one_error_line(store):
    result = CliRunner().invoke(main, ["index", "--store", store.path, "--quiet"])
    assert result.exit_code == 1 and result.output.startswith("Error: The store holds no images")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_indexed_cli_search_writes_nothing_to_stderr(vector_store, tmp_path):
    import subprocess
    import sys

    store, _ = vector_store
    store.build_index()
    result = subprocess.run(
        [sys.executable, "-m", "clipstore.cli", "search", "a red circle", "-k", "3", "--store", store.path],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0 and len(result.stdout.strip().splitlines()) == 3
    assert result.stderr == ""  # LanceDB's Rust warnings (e.g. an implicit _distance column) would land here


def test_exactly_scored_candidates_that_lost_their_paths_are_skipped(store):
    """The best candidates may have lost their file rows since the vectors were read: the next ones fill in."""
    from clipstore.search.searcher import ImageSearcher

    dim = store.model.embed_dim
    orphans = add_vectors(store, clustered(30, dim, seed=1), with_files=False)
    linked = add_vectors(store, clustered(5, dim, seed=2), start=100)
    ids = orphans + linked
    scores = np.linspace(1.0, 0.0, len(ids)).astype(np.float32)  # every orphan ranks above every linked image
    hits = ImageSearcher(store.db)._hits(ids, scores, 3, None)
    assert [h.id for h in hits] == linked[:3] and all(h.path.startswith("/virtual/") for h in hits)
    assert [h.id for h in ImageSearcher(store.db)._hits(ids, scores, 10, None)] == linked  # fewer than k exist


def test_only_the_latest_version_of_a_table_is_kept_open(vector_store):
    """A long-lived reader of a table written meanwhile keeps one Lance dataset for it, not one per version."""
    store, vectors = vector_store
    images = tables.open_images(store.db)
    first = tables.lance_dataset(images)
    add_vectors(store, clustered(3, vectors.shape[1], seed=5), start=9000)
    latest = tables.lance_dataset(images)
    assert latest.version > first.version and latest.count_rows() == first.count_rows() + 3
    assert [key for key in tables._DATASETS if key[0] == images.uri] == [(images.uri, latest.version)]
