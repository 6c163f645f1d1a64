"""The benchmark scripts run at a tiny size and print what they promise."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import clipstore
from clipstore.db import layout, tables
from mini_model import DEFAULT_MINI

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(table: str) -> dict[str, list[str]]:
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("| ")]
    return {row[0]: row[1:] for row in cells[2:]}  # after the header and its rule


@pytest.mark.slow  # renders and embeds the cluster centres with clipstore-mini, builds a store (~10 s)
def test_search_scale_builds_a_clustered_store_and_reports_exact_recall(tmp_path, capsys):
    search_scale = _script("search_scale")
    args = ["--n", "500", "--queries", "5", "--centres", "20", "--no-cli", "--cache", str(tmp_path / "cache")]
    table = search_scale.main(args)

    assert table in capsys.readouterr().out
    assert "500 images × 256 dims" in table and "vector index: none" in table and "store built" in table
    rows = _rows(table)
    exact = ["LanceDB flat scan (exact)", "clipstore exact (`search_vector`)", "clipstore exact, prefix `/clipstore-bench/folder-00/`"]
    assert list(rows) == exact  # no index yet, no cold-process rows with --no-cli
    for name in exact:
        runs, p50, p95, recall, rss = rows[name]
        assert runs == "5" and recall == "1.000" and 0 < float(p50) <= float(p95)

    # A real store: the rows are there, with one path each, spread over the folders; vectors are clustered.
    store = clipstore.connect(tmp_path / "cache" / "store.clipstore", create=False)
    assert (store.count_images(), store.count_files()) == (500, 500)
    hits = store.search_vector(np.load(tmp_path / "cache" / "queries.npy")[0], 10, path_prefix="/clipstore-bench/folder-03/")
    assert len(hits) == 10 and all(hit.path.startswith("/clipstore-bench/folder-03/") for hit in hits)
    vectors = tables.vector_matrix(tables.read_columns(tables.open_images(store.db), ["embedding"]).column("embedding"))
    nearest = np.sort(vectors @ vectors.T, axis=1)[:, -2]  # each row's nearest other row
    assert np.median(nearest) > 0.85  # 25 rows per centre: every row has close neighbours (uniform noise: ~0.2)

    # A second run reuses the cached store.
    assert "store reused" in search_scale.main(args)
    assert store.count_images() == 500


def test_search_scale_on_real_embeddings_with_an_index_and_a_sweep(tmp_path, capsys):
    search_scale = _script("search_scale")
    args = ["--n", "400", "--queries", "5", "--real", "--no-cli", "--build-index", "--sweep", "--cache", str(tmp_path / "cache")]
    table = search_scale.main(args)
    rows = _rows(table)
    assert "400 images × 256 dims" in table and "vector index: IvfHnswSq, built in" in table
    warm = rows["clipstore indexed (IvfHnswSq), warm (the same queries again)"]
    assert warm[3] != "–" and float(warm[3]) >= 0.9
    assert any(name.startswith("LanceDB index, nprobes ") for name in rows)
    # The rows are real embeddings of distinct rendered images: not perturbations of a few centres.
    store = clipstore.connect(tmp_path / "cache" / "store.clipstore", create=False)
    vectors = tables.vector_matrix(tables.read_columns(tables.open_images(store.db), ["embedding"]).column("embedding"))
    assert vectors.shape == (400, 256) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)


@pytest.mark.slow  # embeds 150 prompts, renders and ingests 240 images, trains a short head (~1 min)
def test_describe_scale_builds_an_indexed_bank_and_reports_exact_recall(tmp_path, capsys):
    describe_scale = _script("describe_scale")
    args = ["--n", "400", "--real", "150", "--queries", "4", "--index-threshold", "100", "--cache", str(tmp_path)]
    table = describe_scale.main(args)

    assert table in capsys.readouterr().out
    assert "Prompt bank of 400 prompts" in table and "IVF_HNSW_SQ" in table and "store built" in table
    rows = _rows(table)
    assert len(rows) == 4 and all(row[0] == "4" and 0 < float(row[1]) <= float(row[2]) for row in rows.values())
    recalls = [row[3].split()[0] for name, row in rows.items() if "neighbours" in name or "prompts search" in name]
    assert [float(r) for r in recalls] == [1.0, 1.0]  # a 400-row index answers like the exact scan
    store = clipstore.connect(tmp_path / "describe-scale-400" / "store.clipstore", create=False)
    assert store.count_prompts() == 400 and store.heads()
    assert "store reused" in describe_scale.main(args)


@pytest.mark.slow  # renders and ingests a small store, starts a `clipstore serve` process
def test_serve_latency_times_http_beside_in_process(tmp_path, capsys):
    serve_latency = _script("serve_latency")
    table = serve_latency.main(["--n", "30", "--queries", "4", "--warmup", "1", "--k", "5", "--cache", str(tmp_path / "cache")])
    assert table in capsys.readouterr().out
    assert f"store: 30 rendered images, {DEFAULT_MINI} (256-d)" in table and "4 timed after 1 warm-up" in table
    rows = _rows(table)
    assert list(rows) == [
        "`store.search_text` in-process",
        "`GET /search` (JSON) through HTTP",
        "`GET /search` (the page's HTML fragment) through HTTP",
        "`GET /image/{id}/thumb` (cached JPEG) through HTTP",
    ]
    for runs, p50, p95 in rows.values():
        assert runs == "4" and 0 < float(p50) <= float(p95)


@pytest.mark.slow  # six ingests, four on the session's Ray cluster (~40 s)
def test_distributed_ingest_compares_the_single_process_with_each_ray_shape(tmp_path, capsys, ray_cluster):
    distributed_ingest = _script("distributed_ingest")
    args = ["--n", "16", "--size", "160x120", "--model", "clipstore-mini", "--cache", str(tmp_path), "--workers", "default,2", "--rounds", "2"]
    table = distributed_ingest.main(args)

    assert table in capsys.readouterr().out
    assert "16 JPEGs 160x120, clipstore-mini, CPU: " in table and "stores equal" in table and "2 interleaved round(s)" in table
    rows = _rows(table)
    assert list(rows) == ["single process", "Ray (default): 1 worker × 2 threads, 2 lanes", "Ray (--workers 2): 2 workers × 1 thread"]
    local_seconds, local_rate, one, ones = rows["single process"]
    assert one == "1.00" and ones == "1.00, 1.00"
    assert float(local_rate) == pytest.approx(16 / float(local_seconds), rel=0.1)  # seconds are rounded to 0.01
    for label in list(rows)[1:]:
        seconds, rate, ratio, each = rows[label]
        rounds = [float(r) for r in each.split(", ")]
        assert len(rounds) == 2 and float(ratio) == pytest.approx(sum(rounds) / 2, abs=0.01)  # the median of two
        assert float(rate) == pytest.approx(16 / float(seconds), rel=0.1)
    assert len(list((tmp_path / "photos-16-160x120").glob("*.jpg"))) == 16
    assert not list(tmp_path.glob("stores-*/*"))  # each round's stores are removed


def test_inference_paths_reports_speed_and_agreement_of_each_path(capsys):
    paths = _script("inference_paths")
    table = paths.main(["--arch", "clipstore-mini", "--batch", "2", "--rounds", "1", "--seconds", "0.05", "--no-compile"])

    assert table in capsys.readouterr().out
    rows = _rows(table)
    assert {"torch eager, fp32", "torch eager, fp32, channels-last input", "dynamic int8 linear layers (opt-in int8)"} <= set(rows)
    assert "torch.compile (inductor), fp32" not in rows  # --no-compile
    rate, ratio, cosine, _ = rows["torch eager, fp32"]
    assert float(rate) > 0 and ratio == "1.00" and cosine == "1.00000"
    assert float(rows["torch eager, fp32, channels-last input"][2]) > 0.9999  # the same model, the same numbers
    assert 0.99 <= float(rows["dynamic int8 linear layers (opt-in int8)"][2]) < 1.0  # int8 changes the vectors a little
