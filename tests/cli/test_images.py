"""The image commands (ingest, search, similar, info, migrate, world render, demo) through CliRunner, checked through the
Python API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import clipstore
from clipstore.cli import main


def test_ingest_json_report_and_store_contents(run, messy, store_path):
    result = run("ingest", str(messy["root"]), "--model", "clipstore-mini", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= {"added", "skipped_unchanged", "duplicates", "failed"}
    assert report["added"] == messy["expected_distinct_images"]
    assert {f["path"] for f in report["failed"]} == {str(p) for p in messy["bad"]}
    assert all(f["reason"] for f in report["failed"])

    store = clipstore.connect(store_path)
    assert store.count_images() == messy["expected_distinct_images"]
    assert store.count_files() == messy["expected_distinct_images"] + len(messy["duplicate_of"])

    again = json.loads(run("ingest", str(messy["root"]), "--json").stdout)
    assert again["added"] == 0 and again["skipped_unchanged"] == store.count_files()


def test_ingest_human_summary_lists_failures(run, messy):
    result = run("ingest", str(messy["root"]), "--model", "clipstore-mini", "--quiet")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Added {messy['expected_distinct_images']},")
    assert "failed: " in result.stdout and "fake.jpg" in result.stdout


def test_prune_flag(run, photo_folder, store_path):
    run("ingest", str(photo_folder), "--model", "clipstore-mini")
    (photo_folder / "a" / "img1.png").unlink()
    report = json.loads(run("ingest", str(photo_folder), "--prune", "--json").stdout)
    assert report["pruned"] == 1
    assert clipstore.connect(store_path).count_files() == 5


def test_search_and_similar_json(run, photo_folder, store_path):
    run("ingest", str(photo_folder), "--model", "clipstore-mini")
    target = photo_folder / "b" / "img4.png"
    similar = json.loads(run("similar", str(target), "-k", "3", "--json").stdout)
    assert [set(hit) for hit in similar["hits"]] == [{"id", "path", "score"}] * 3
    assert similar["hits"][0]["path"] == str(target)
    assert similar["hits"][0]["score"] == pytest.approx(1.0, abs=2e-3)

    text = json.loads(run("search", "a red circle", "-k", "2", "--json").stdout)
    expected = clipstore.connect(store_path).search_text("a red circle", k=2)
    assert [hit["id"] for hit in text["hits"]] == [hit.id for hit in expected]

    plain = run("search", "a red circle", "-k", "2")
    assert plain.exit_code == 0 and str(photo_folder) in plain.stdout


def test_info_and_migrate_list(run, photo_folder, store_path):
    run("ingest", str(photo_folder), "--model", "clipstore-mini")
    info = json.loads(run("info", "--json").stdout)
    assert set(info) >= {"path", "images", "files", "model", "migrations"}
    assert (info["path"], info["images"], info["files"]) == (str(store_path), 6, 6)
    assert info["model"]["architecture"] == "clipstore-mini"

    listed = run("migrate", "--list")
    assert listed.exit_code == 0 and "0001_create_tables  applied" in listed.stdout
    as_json = json.loads(run("migrate", "--list", "--json").stdout)
    assert as_json["migrations"][0]["applied"] is True


def test_world_render_writes_pngs_and_manifest(tmp_path):
    from clipstore.world.samples import read_manifest

    runner = CliRunner()
    result = runner.invoke(main, ["world", "render", str(tmp_path / "w"), "--n", "8", "--seed", "3", "--size", "64", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["count"], summary["seed"], summary["split"], summary["size"]) == (8, 3, "train", 64)
    records = read_manifest(summary["manifest"])
    assert len(records) == 8 and all(Path(r["path"]).is_file() for r in records)
    again = runner.invoke(main, ["world", "render", str(tmp_path / "w2"), "--n", "8", "--seed", "3", "--size", "64"])
    assert again.exit_code == 0 and "rendered 8 images" in again.stdout
    assert [Path(r["path"]).read_bytes() for r in read_manifest(tmp_path / "w2" / "manifest.jsonl")] == [
        Path(r["path"]).read_bytes() for r in records
    ]


@pytest.mark.slow
def test_demo_renders_ingests_and_searches(tmp_path):
    result = CliRunner().invoke(main, ["demo", str(tmp_path / "demo"), "--n", "40", "--json"])
    assert result.exit_code == 0, result.output
    demo = json.loads(result.stdout)
    assert demo["rendered"] == 40 and demo["report"]["added"] == 40 and demo["report"]["failed"] == []
    store = clipstore.connect(demo["store"], create=False)
    assert store.count_images() == 40 and store.model.architecture == "clipstore-mini"
    image_searches = [s for s in demo["searches"] if s["kind"] == "image"]
    assert image_searches and all(s["hits"][0]["path"] == s["query"] for s in image_searches)
    assert all(len(s["hits"]) == 3 and len(s["prompts"]) == 3 for s in demo["searches"])
    text_searches = [s for s in demo["searches"] if s["kind"] == "text"]
    assert len(text_searches) == 4
    assert sum(s["hits"][0]["path"] == s["target"] for s in text_searches) >= 3  # the trained model finds them

    text = CliRunner().invoke(main, ["demo", str(tmp_path / "demo2"), "--n", "20"])
    assert text.exit_code == 0 and "(written for " in text.stdout and "<- " in text.stdout
    assert f"clipstore search " in text.stdout and f"--store {tmp_path / 'demo2' / 'demo.clipstore'}" in text.stdout
    again = CliRunner().invoke(main, ["demo", str(tmp_path / "demo2"), "--n", "20"])
    assert again.exit_code == 0 and "added 0, unchanged 20" in again.stdout  # a second run says what it skipped


def test_demo_output_is_ignored_by_git():
    ignored = (Path(__file__).resolve().parents[2] / ".gitignore").read_text().split()
    assert "/clipstore-demo/" in ignored  # `clipstore demo` run from a clone writes ./clipstore-demo


def test_mistyped_folder_creates_no_store(run, store_path, tmp_path):
    result = run("ingest", str(tmp_path / "phtos"), "--model", "clipstore-mini")
    assert result.exit_code == 1 and "no such file or folder" in result.output
    assert not store_path.exists()


@pytest.mark.parametrize(
    "name, content, where",
    [
        ("bad.jsonl", '{"path": "a.png", "prompt": "ok"}\n{path: "b.png"}\n', "line 2, column 2"),
        ("bad.csv", 'path,prompt\n"a.png"x,"a cat"\n', "line 2"),
        ("columns.csv", "file,caption\na.png,a cat\n", "has no path or prompt columns"),
    ],
)
def test_malformed_manifest_names_file_and_line(run, photo_folder, tmp_path, name, content, where):
    manifest = tmp_path / name
    manifest.write_text(content)
    result = run("ingest", str(photo_folder), "--model", "clipstore-mini", "--manifest", str(manifest))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(manifest) in result.output and where in result.output
    assert "JSONDecodeError" not in result.output and len(result.output.strip().splitlines()) == 1


def test_gc_removes_fragments_nothing_committed_and_keeps_every_version(run, photo_folder, store_path):
    import pyarrow as pa

    from clipstore.db import fragments, layout, tables

    run("ingest", str(photo_folder), "--model", "clipstore-mini", "--quiet")
    store = clipstore.connect(store_path)
    images = tables.open_images(store.db)
    versions, rows = len(images.to_lance().versions()), images.count_rows()
    written = fragments.write_fragments(images.uri, images.to_arrow().slice(0, 2))  # as a killed ingest's worker would
    assert written

    result = run("gc", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files_removed"] == 1 and report["bytes_removed"] > 0
    assert [table["table"] for table in report["tables"]] == [layout.IMAGES]
    assert (len(images.to_lance().versions()), images.count_rows()) == (versions, rows)  # nothing committed is touched
    assert store.search_image(photo_folder / "a" / "img1.png", k=1)[0].score > 0.99
    assert json.loads(run("gc", "--json").stdout)["files_removed"] == 0
    assert "Removed 0 unreferenced files" in run("gc").stdout


def test_ingest_ray_workers_needs_ray(run, photo_folder):
    result = run("ingest", str(photo_folder), "--model", "clipstore-mini", "--ray-workers", "2")
    assert result.exit_code == 2 and "--ray-workers needs --ray" in result.output


@pytest.mark.slow  # a Ray pipeline starts workers that load the model (seconds)
def test_ingest_an_s3_prefix_on_ray(ray_cluster, s3, tmp_path, photo_folder, monkeypatch):
    """`clipstore ingest s3://bucket/photos --store ... --ray auto`, endpoint and credentials from the AWS variables."""
    import boto3

    from object_storage import ACCESS_KEY, REGION, SECRET_KEY

    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    uri = s3.uri("photos")
    prefix = uri.split("/", 3)[3]
    client = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)
    for path in sorted(photo_folder.rglob("*.png")):
        client.upload_file(str(path), s3.bucket, f"{prefix}/{path.relative_to(photo_folder).as_posix()}")
    store = s3.uri("store")
    runner = CliRunner()
    result = runner.invoke(main, ["ingest", uri, "--store", store, "--model", "clipstore-mini", "--ray", "auto", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 6
    remote = clipstore.connect(store)
    assert sorted(remote.image_paths(remote.search_image(photo_folder / "a" / "img1.png", k=1)[0].id)) == [f"{uri}/a/img1.png"]
    again = runner.invoke(main, ["ingest", uri + "/", "--store", store, "--ray", "auto", "--json"])
    assert json.loads(again.stdout)["skipped_unchanged"] == 6

    missing = runner.invoke(main, ["ingest", s3.uri("nothing-here"), "--store", str(tmp_path / "x.clipstore"), "--ray", "auto"])
    assert missing.exit_code == 1 and "no object there and none under it" in missing.output
    assert not (tmp_path / "x.clipstore").exists()  # a mistyped source creates no store
