"""The CLI through click's CliRunner, checked through the Python API."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import clipstore
from clipstore.cli import main


@pytest.fixture
def run(store_path):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, [*args, "--store", str(store_path)] if args and args[0] != "--help" else list(args))

    return invoke


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


@pytest.mark.parametrize(
    "args, message",
    [
        (("search", "a dog"), "No clipstore store at"),
        (("info",), "No clipstore store at"),
        (("ingest", "/no/such/folder", "--model", "clipstore-mini"), "no such file or folder"),
        (("ingest", ".", "--model", "ViT-B-32:nope"), "Unknown pretrained tag"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_1(run, args, message):
    result = run(*args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_model_mismatch_from_the_cli(run, photo_folder):
    run("ingest", str(photo_folder), "--model", "clipstore-mini")
    result = run("search", "x", "--model", "ViT-B-32:openai")
    assert result.exit_code == 1 and "cannot be mixed" in result.output and "Traceback" not in result.output


def test_every_command_has_help_text():
    runner = CliRunner()
    for name, command in main.commands.items():
        assert command.help, f"command {name} has no help text"
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0 and "--store" in result.output


def test_every_command_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    for name in main.commands:
        assert f"clipstore {name}" in readme, f"README does not document `clipstore {name}`"
