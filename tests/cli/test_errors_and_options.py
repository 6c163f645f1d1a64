"""The CLI package's contracts: options made from the options dataclasses, only ClipstoreError as a one-line
message (a bug keeps its traceback), user mistakes that used to be caught as bare OSError/ValueError."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

import clipstore
from clipstore.cli import main
from clipstore.errors import ClipstoreError, InvalidOptionError, NotWritableError
from clipstore.finetune.options import FinetuneOptions
from clipstore.ingest.run import IngestOptions
from clipstore.describe.train import TrainOptions


def _option_defaults(command_name: str) -> dict:
    return {param.name: param.default for param in main.commands[command_name].params}


@pytest.mark.parametrize(
    "command, options, not_on_the_cli",
    [
        ("train", TrainOptions, {"dropout"}),
        ("finetune", FinetuneOptions, {"weight_decay", "warmup_fraction", "patience", "max_centres"}),
        ("ingest", IngestOptions, {"commit_every", "workers", "lanes"}),
    ],
)
def test_each_cli_default_is_the_dataclass_default(command, options, not_on_the_cli):
    defaults = _option_defaults(command)
    fields = {field.name: field.default for field in dataclasses.fields(options)}
    assert set(fields) - set(defaults) == not_on_the_cli  # every other field is an option of the command
    for name in set(fields) - not_on_the_cli:
        assert defaults[name] == fields[name], f"{command} --{name}: {defaults[name]!r} != {fields[name]!r}"


@pytest.mark.parametrize(
    "method, args, expected",
    [
        ("train", [], TrainOptions()),
        ("train", ["--no-augment", "--no-filter", "--warmup", "0.2", "--freeze-vision"],
         TrainOptions(augment=False, dedup_threshold=None, warmup_fraction=0.2, freeze_vision=True)),
        ("finetune", [], FinetuneOptions()),
        ("finetune", ["--method", "2sft", "--no-augment", "--caption-threshold", "0.3", "--labels-from-folders"],
         FinetuneOptions(method="2sft", augment=False, caption_threshold=0.3, labels_from_folders=True)),
    ],
)
def test_the_command_passes_the_options_it_was_given(store, store_path, monkeypatch, method, args, expected):
    seen = []
    monkeypatch.setattr(clipstore.Store, method, lambda self, options, **kwargs: seen.append(options) or 1 / 0)
    result = CliRunner().invoke(main, [method, *args, "--store", str(store_path)])
    assert isinstance(result.exception, ZeroDivisionError)  # stops after the one Store call
    assert seen == [expected]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyError("boom"), ValueError("boom"), OSError(5, "boom")])
def test_a_bug_keeps_its_traceback(store, store_path, monkeypatch, error):
    def broken(self):
        raise error

    monkeypatch.setattr(clipstore.Store, "count_prompts", broken)
    result = CliRunner().invoke(main, ["prompts", "count", "--store", str(store_path)])
    assert result.exit_code == 1
    assert result.exception is error  # not turned into a message: the runner (and a terminal) gets the traceback
    assert "Error:" not in result.output


def test_a_library_error_is_one_line(store, store_path, monkeypatch):
    def refused(self):
        raise ClipstoreError("Nothing to count. Add prompts first.")

    monkeypatch.setattr(clipstore.Store, "count_prompts", refused)
    result = CliRunner().invoke(main, ["prompts", "count", "--store", str(store_path)])
    assert (result.exit_code, result.output) == (1, "Error: Nothing to count. Add prompts first.\n")


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--retrieval", "--labels-from-folders", "--template", "{x"], "is not usable: it cannot be filled in"),
        (["eval", "--retrieval", "--labels-from-folders", "--template", "a photo"], "is not usable: it has no {label}"),
        (["describe", "{photos}", "--out", "{file}/out.jsonl"], "Cannot write"),
        (["world", "render", "{file}/world", "--n", "2"], "Cannot write the rendered images to"),
        (["ingest", "{photos}", "--store", "{file}/new.clipstore", "--model", "clipstore-mini"], "Cannot write a new store at"),
        (["demo", "{file}/demo", "--n", "10"], "Cannot write the rendered images to"),
    ],
)
def test_user_mistakes_once_caught_as_bare_exceptions_are_clear_lines(store, store_path, photo_folder, tmp_path, args, message):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    words = [word.replace("{file}", str(a_file)).replace("{photos}", str(photo_folder)) for word in args]
    if "--store" not in words and words[0] in {"eval", "describe"}:
        words += ["--store", str(store_path)]
    result = CliRunner().invoke(main, words)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("Error: ")


def test_a_store_that_cannot_be_written_is_one_clear_line(store, store_path, tmp_path):
    # What a read-only disk does to the first write of every command that changes the store (root ignores
    # permission bits, so the lock file is made impossible to open instead).
    (store_path / ".clipstore-write.lock").unlink(missing_ok=True)
    (store_path / ".clipstore-write.lock").mkdir()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    result = CliRunner().invoke(main, ["prompts", "add", str(prompts), "--store", str(store_path)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: Cannot write to the store at {store_path}")
    assert "copy it to a writable disk" in result.output
    assert clipstore.connect(store_path).count_prompts() == 0  # reading still works


@pytest.mark.parametrize(
    "make",
    [
        lambda: TrainOptions(epochs=0),
        lambda: TrainOptions(mix=2.0),
        lambda: FinetuneOptions(method="sgd"),
        lambda: __import__("clipstore.encoders.clip", fromlist=["x"]).resolve_precision("fp16", "cpu"),
        lambda: __import__("clipstore.finetune.retrieval", fromlist=["x"]).check_template("{label"),
    ],
)
def test_bad_option_values_are_invalid_option_errors_and_still_value_errors(make):
    with pytest.raises(InvalidOptionError) as raised:
        make()
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, ClipstoreError)


def test_an_output_file_that_cannot_be_created_says_why_and_what_to_do(tmp_path):
    from clipstore.paths import open_output

    (tmp_path / "a-file").write_text("")
    with pytest.raises(NotWritableError, match="Not a directory. Choose an output file in a folder you can write to"):
        open_output(tmp_path / "a-file" / "x.jsonl")
