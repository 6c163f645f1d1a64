"""The CLI as a whole, through click's CliRunner: help and README for every command, the --store option, exit codes and
one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import clipstore
from clipstore.cli import main


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


def test_store_path_that_is_a_file_is_one_clear_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(main, ["info", "--store", str(tmp_path / "afile")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_reader_closing_the_pipe_ends_quietly(store_path, photo_folder):
    import subprocess
    import sys

    clipstore.connect(store_path, model="clipstore-mini").ingest(photo_folder)
    child = subprocess.Popen(
        [sys.executable, "-m", "clipstore.cli", "search", "a red circle", "-k", "6", "--store", str(store_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=store_path.parent,  # not the repository root, whose clipstore/ would shadow the installed package
    )
    child.stdout.close()  # like `| head -0`: the reader is gone before the first line is written
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 141  # what a shell reports for a tool ended by SIGPIPE
    assert stderr.decode().strip() == ""  # no "Error: Broken pipe", no "Exception ignored"


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


def test_storage_options_are_key_value_pairs_given_to_every_command_with_a_store():
    for words, command in _leaf_commands(main):
        names = {name for param in command.params for name in getattr(param, "opts", ())}
        assert ("--store" in names) == ("--storage-option" in names), words
    result = CliRunner().invoke(main, ["info", "--store", "s3://bucket/x", "--storage-option", "aws_region"])
    assert result.exit_code == 2 and "'aws_region' is not KEY=VALUE" in result.output
