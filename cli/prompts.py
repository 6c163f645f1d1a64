"""The prompt bank commands: prompts add, remove, count, list, search."""

from __future__ import annotations

import click

import clipstore
from clipstore.prompts.files import PROMPT_COLUMNS, check_prompt_file

from clipstore.cli.common import (
    ProgressBar,
    clipstore_errors,
    echo_first,
    json_option,
    plural,
    print_json,
    quiet_option,
    show_progress,
    store_options,
)


@click.group(short_help="The prompt bank: add, remove, count, list, search.")
def prompts() -> None:
    """The prompt bank: a de-duplicated corpus of prompts (cosine >= 0.85 near-duplicates are rejected)."""


@prompts.command("add", short_help="Add the prompts of text/CSV/JSONL/Parquet files.")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@store_options
@click.option("--column", metavar="NAME", help="Column (CSV/TSV/Parquet) or key (JSONL/JSON) holding the prompt "
              f"[default: the first of {', '.join(PROMPT_COLUMNS)} the file has].")
@click.option("--source", help="Label stored with each prompt [default: the file name].")
@quiet_option
@json_option
@clipstore_errors
def prompts_add(files, store_path, storage_options, model, column, source, quiet, as_json) -> None:
    """Add the prompts of FILES to the bank: UTF-8 .txt (one per line), .csv/.tsv, .jsonl, .json, .parquet.

    Prompts are considered in file order; one whose MiniLM cosine with an already kept prompt is >= 0.85 is
    rejected and listed with the prompt it duplicates, one holding control characters is rejected as invalid.
    A file that is not prompt text (an image, a binary file) is refused and nothing is added.
    """
    for file in files:
        check_prompt_file(file)  # `prompts add photo.png` must not create an empty store
    store = clipstore.connect(store_path, storage_options=storage_options, model=model)
    with ProgressBar(enabled=show_progress(quiet)) as bar:
        report = store.add_prompt_files(files, column=column, source=source, progress=bar.update)
    if as_json:
        print_json(report.to_dict())
        return
    rejected = plural(len(report.duplicates), "near-duplicate")
    if report.rejected:
        rejected += f" and {plural(len(report.rejected), 'invalid prompt')}"
    click.echo(f"Kept {plural(report.inserted, 'prompt')}; rejected {rejected}.")
    echo_first([f"  {d.similarity:.3f}  {d.text!r} duplicates {d.kept_text!r}" for d in report.duplicates])
    echo_first([f"  invalid  {r.text!r}: {r.reason}" for r in report.rejected])


@prompts.command("remove", short_help="Remove prompts by id, source or matching text.")
@store_options
@click.option("--id", "ids", multiple=True, metavar="ID", help="A prompt id, or a prefix of at least 6 characters "
              "(`prompts list` shows 12); repeat it, or separate ids with commas, for several.")
@click.option("--source", metavar="LABEL", help="Every prompt with this source label (`prompts list --json` shows them).")
@click.option("--match", metavar="TEXT", help="Every prompt whose text contains TEXT (case-insensitive, no wildcards).")
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@json_option
@clipstore_errors
def prompts_remove(store_path, storage_options, model, ids, source, match, dry_run, as_json) -> None:
    """Remove prompts from the bank by id, source label or text (together: prompts matching all).

    Nothing else in the bank changes; a removed prompt frees its place, so a near-duplicate of it can be
    added afterwards. An unknown or ambiguous id removes nothing.
    """
    id_list = [part for value in ids for part in value.replace(",", " ").split()] if ids else None
    report = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False).remove_prompts(id_list, source, match, dry_run)
    if as_json:
        print_json(report.to_dict())
        return
    if not report.prompts:
        click.echo("No prompt matches; nothing removed.")
        return
    count = plural(len(report.prompts), "prompt")
    click.echo(f"Would remove {count} (dry run: nothing changed)." if report.dry_run else f"Removed {count}.")
    echo_first([f"  {p.id[:12]}  {p.text}" for p in report.prompts])


@prompts.command("count", short_help="How many prompts the bank holds.")
@store_options
@json_option
@clipstore_errors
def prompts_count(store_path, storage_options, model, as_json) -> None:
    """Print how many prompts the bank holds."""
    count = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False).count_prompts()
    if as_json:
        print_json({"prompts": count})
    else:
        click.echo(count)


@prompts.command("list", short_help="List bank prompts in insertion order.")
@store_options
@click.option("--limit", type=click.IntRange(0), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@json_option
@clipstore_errors
def prompts_list(store_path, storage_options, model, limit, offset, as_json) -> None:
    """List bank prompts in insertion order."""
    rows = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False).list_prompts(limit=limit, offset=offset)
    if as_json:
        print_json({"prompts": [row.to_dict() for row in rows]})
        return
    for row in rows:
        click.echo(f"{row.id[:12]}  {row.text}")


@prompts.command("search", short_help="Bank prompts closest in meaning to a text.")
@click.argument("text")
@store_options
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Number of results.")
@json_option
@clipstore_errors
def prompts_search(text, store_path, storage_options, model, k, as_json) -> None:
    """Find the bank prompts closest in meaning to TEXT (all-MiniLM-L6-v2 cosine)."""
    hits = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False).search_prompts(text, k=k)
    if as_json:
        print_json({"hits": [hit.to_dict() for hit in hits]})
        return
    for hit in hits:
        click.echo(f"{hit.score:.4f}  {hit.text}")



COMMANDS = (prompts,)
