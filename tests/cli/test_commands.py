"""The CLI through click's CliRunner, checked through the Python API."""

from __future__ import annotations

import json
from pathlib import Path

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


def _leaf_commands(group, prefix=()):
    import click

    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            assert command.help, f"command group {name} has no help text"
            yield from _leaf_commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def test_every_command_has_help_text_and_json_output():
    runner = CliRunner()
    leaves = list(_leaf_commands(main))
    assert len(leaves) >= 7
    for words, command in leaves:
        assert command.help, f"command {' '.join(words)} has no help text"
        result = runner.invoke(main, [*words, "--help"])
        assert result.exit_code == 0 and "--json" in result.output, words


def test_every_command_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for words, _ in _leaf_commands(main):
        assert f"clipstore {' '.join(words)}" in readme, f"README does not document `clipstore {' '.join(words)}`"


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


def test_store_path_that_is_a_file_is_one_clear_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(main, ["info", "--store", str(tmp_path / "afile")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_prompts_commands(run, store_path, tmp_path):
    (tmp_path / "p.txt").write_text(
        "a large red circle on a plain white background\na big red circle on a plain white backdrop\nan old lighthouse at dusk\n",
        encoding="utf-8",
    )
    added = run("prompts", "add", str(tmp_path / "p.txt"), "--model", "clipstore-mini", "--json")
    assert added.exit_code == 0, added.output
    report = json.loads(added.stdout)
    assert report["inserted"] == 2
    assert [(d["text"], d["index"]) for d in report["duplicates"]] == [("a big red circle on a plain white backdrop", 1)]
    assert clipstore.connect(store_path).count_prompts() == 2

    assert json.loads(run("prompts", "count", "--json").stdout) == {"prompts": 2}
    listed = json.loads(run("prompts", "list", "--json").stdout)["prompts"]
    assert [p["text"] for p in listed] == ["a large red circle on a plain white background", "an old lighthouse at dusk"]
    hits = json.loads(run("prompts", "search", "lighthouse", "-k", "1", "--json").stdout)["hits"]
    assert hits[0]["text"] == "an old lighthouse at dusk"
    human = run("prompts", "add", str(tmp_path / "p.txt"))
    assert "Kept 0 prompts; rejected 3 near-duplicates." in human.stdout
    info = json.loads(run("info", "--json").stdout)
    assert (info["prompts"], info["prompt_dedup_threshold"]) == (2, 0.85)

    missing = run("prompts", "add", str(tmp_path / "nope.txt"))
    assert missing.exit_code == 1 and "no such file" in missing.output and "Traceback" not in missing.output


@pytest.mark.slow
def test_reader_closing_the_pipe_ends_quietly(store_path, photo_folder):
    import subprocess
    import sys

    clipstore.connect(store_path, model="clipstore-mini").ingest(photo_folder)
    child = subprocess.Popen(
        [sys.executable, "-m", "clipstore.cli", "search", "a red circle", "-k", "6", "--store", str(store_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    child.stdout.close()  # like `| head -0`: the reader is gone before the first line is written
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 141  # what a shell reports for a tool ended by SIGPIPE
    assert stderr.decode().strip() == ""  # no "Error: Broken pipe", no "Exception ignored"


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


@pytest.mark.parametrize("table", ["files", "images", "prompts"])
def test_store_missing_a_table_is_called_damaged(run, store_path, photo_folder, table):
    import shutil

    clipstore.connect(store_path, model="clipstore-mini").ingest(photo_folder)
    shutil.rmtree(store_path / f"{table}.lance")
    result = run("search", "a red circle")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "is damaged" in result.output and f"'{table}'" in result.output and "clipstore ingest FOLDER --store NEW_PATH" in result.output
    with pytest.raises(clipstore.StoreDamagedError):
        clipstore.connect(store_path)


def test_top_level_help_lists_every_command_whole():
    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    assert result.exit_code == 0
    examples, commands = result.output.split("Commands:")
    for name in main.commands:
        assert f"clipstore {name}" in examples, f"`clipstore --help` has no example of {name}"
    summaries = [line.split(None, 1)[1] for line in commands.strip().splitlines()]
    assert len(summaries) == len(main.commands)
    assert all(summary.endswith(".") and not summary.endswith("...") for summary in summaries), summaries


def test_store_option_reads_the_same_everywhere():
    helps = set()
    for words, command in _leaf_commands(main):
        for param in command.params:
            if "--store" in getattr(param, "opts", ()):
                helps.add(param.help)
                assert "clipstore info" not in param.help  # `info --help` must not send the reader to itself
    assert len(helps) == 1, helps


def test_usage_mistakes_exit_2_and_runtime_errors_exit_1(run, tmp_path):
    usage = run("search")  # missing TEXT: click's usage message
    assert usage.exit_code == 2 and "Usage:" in usage.output and "Missing argument" in usage.output
    runtime = run("info")
    assert runtime.exit_code == 1 and runtime.output.startswith("Error: No clipstore store at")


def test_readme_documents_every_field_of_the_reports():
    import dataclasses

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for result in (clipstore.IngestReport, clipstore.StoreInfo):
        for field in dataclasses.fields(result):
            assert f"`{field.name}`" in readme, f"README does not document {result.__name__}.{field.name}"


def test_prompts_add_refuses_an_image_in_one_line_without_creating_a_store(run, store_path, tmp_path):
    from PIL import Image

    Image.new("RGB", (16, 16), (9, 9, 9)).save(tmp_path / "photo.png")
    result = run("prompts", "add", str(tmp_path / "photo.png"), "--model", "clipstore-mini")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "photo.png is a PNG image" in result.output and "clipstore ingest" in result.output and "--manifest" in result.output
    assert not store_path.exists()


def test_prompts_add_grammar_rejections_and_column_help(run, store_path, tmp_path):
    (tmp_path / "p.txt").write_text(
        "a large red circle on a plain white background\na big red circle on a plain white backdrop\nbell \x07 rings\n",
        encoding="utf-8",
    )
    human = run("prompts", "add", str(tmp_path / "p.txt"), "--model", "clipstore-mini")
    assert human.exit_code == 0, human.output
    lines = human.stdout.splitlines()
    assert lines[0] == "Kept 1 prompt; rejected 1 near-duplicate and 1 invalid prompt."
    assert any("'bell \\x07 rings'" in line and "U+0007" in line for line in lines[1:])

    (tmp_path / "q.txt").write_text("an old lighthouse at dusk\nanother \x1b escape\nand \x7f one more\n", encoding="utf-8")
    as_json = json.loads(run("prompts", "add", str(tmp_path / "q.txt"), "--json").stdout)
    assert as_json["inserted"] == 1 and [r["index"] for r in as_json["rejected"]] == [1, 2]
    assert all("control character" in r["reason"] for r in as_json["rejected"])
    assert clipstore.connect(store_path).count_prompts() == 2

    help_text = " ".join(CliRunner().invoke(main, ["prompts", "add", "--help"]).output.split())
    assert "[default: prompt]" not in help_text and "prompt, text, caption, positive_prompt" in help_text


def test_prompts_remove(run, store_path, tmp_path):
    texts = ["a large red circle on a plain white background", "an old lighthouse at dusk", "a 100% cotton shirt"]
    (tmp_path / "p.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    run("prompts", "add", str(tmp_path / "p.txt"), "--model", "clipstore-mini")
    store = clipstore.connect(store_path)
    red, lighthouse, shirt = store.list_prompts()

    dry = run("prompts", "remove", "--match", "100%", "--dry-run")
    assert dry.exit_code == 0 and dry.stdout.splitlines() == [
        "Would remove 1 prompt (dry run: nothing changed).",
        f"  {shirt.id[:12]}  {shirt.text}",
    ]
    assert store.count_prompts() == 3

    removed = json.loads(run("prompts", "remove", "--id", red.id[:12], "--id", f"{lighthouse.id[:8]}", "--json").stdout)
    assert removed["removed"] == 2 and removed["dry_run"] is False
    assert [(p["id"], p["text"]) for p in removed["prompts"]] == [(red.id, red.text), (lighthouse.id, lighthouse.text)]
    assert [p.text for p in store.list_prompts()] == [shirt.text]

    human = run("prompts", "remove", "--source", "p.txt")
    assert human.exit_code == 0 and human.stdout.splitlines()[0] == "Removed 1 prompt."
    assert run("prompts", "remove", "--match", "anything").stdout.strip() == "No prompt matches; nothing removed."

    for args, message in ((("prompts", "remove"), "source"), (("prompts", "remove", "--id", "abc"), "at least 6")):
        result = run(*args)
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
