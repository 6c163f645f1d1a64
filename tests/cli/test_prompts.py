"""The `prompts` commands (add, remove, count, list, search) through CliRunner, checked through the Python API."""

from __future__ import annotations

import json

from click.testing import CliRunner

import clipstore
from clipstore.cli import main


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
