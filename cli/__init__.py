"""The `clipstore` command line: a thin layer over the Python API (installed as `clipstore.cli`).

Each command opens the store, makes one Store call, and renders the result as text or, with `--json`, as
JSON on stdout. Library errors become one line on stderr and exit status 1.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import TYPE_CHECKING, Any, Callable

import click

import clipstore
from clipstore.errors import ClipstoreError
from clipstore.imaging import DEFAULT_MAX_MEGAPIXELS
from clipstore.ingest import check_source
from clipstore.paths import STORE_ENV
from clipstore.prompt_files import PROMPT_COLUMNS, check_prompt_file


def _store_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--store",
        "store_path",
        envvar=STORE_ENV,
        metavar="PATH",
        help=f"Store folder [default: ${STORE_ENV} if set, else {_default_store_hint()}].",
    )(func)


def _default_store_hint() -> str:
    """The per-user default store path as help text shows it (home as ~)."""
    import os

    from clipstore.paths import user_default_store_path

    path = user_default_store_path()
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if path.startswith(home + os.sep) else path

if TYPE_CHECKING:
    from clipstore.reembed import ReembedReport


def _store_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--model",
        "model",
        envvar="CLIPSTORE_MODEL",
        metavar="SPEC",
        help="CLIP model: ARCH:TAG (default for a new store: ViT-B-32:laion2b_s34b_b79k), ARCH:/path/to/checkpoint, "
        "or clipstore-mini (offline). For an existing store it must match the store's model.",
    )(func)
    return _store_option(func)


def _json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(func)


def _friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            _exit_reader_gone()
        except ClipstoreError as exc:
            raise click.ClickException(str(exc)) from None
        except (ValueError, KeyError) as exc:  # bad option values, malformed manifests or templates
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
        except OSError as exc:  # e.g. a store on a read-only disk, a full disk
            raise click.ClickException(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None

    return wrapper


def _exit_reader_gone() -> None:
    """The reader of our output went away (`clipstore search ... | head -1`): stop quietly, as Unix tools do
    when SIGPIPE ends them (status 141), with no message and no error when Python flushes stdout at exit."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (e.g. a test runner)
        pass
    raise SystemExit(141)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _print_hits(hits: list[clipstore.SearchHit], as_json: bool) -> None:
    if as_json:
        _print_json({"hits": [hit.to_dict() for hit in hits]})
        return
    if not hits:
        click.echo("No images in the store match. Ingest a folder first: clipstore ingest FOLDER")
    for hit in hits:
        click.echo(f"{hit.score:.4f}  {hit.path}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(clipstore.__version__, prog_name="clipstore")
def main() -> None:
    """clipstore: turn folders of images into a searchable LanceDB store.

    \b
    clipstore demo                         try it offline: render, ingest and search sample images
    clipstore ingest ~/photos              embed every image under a folder (incremental)
    clipstore search "a dog on a beach"    text -> image search
    clipstore similar ~/photos/dog.jpg     image -> image search
    clipstore info                         where the store is, counts, model, migrations
    clipstore migrate --list               applied and pending schema migrations
    clipstore prompts add prompts.txt      the prompt bank (also: remove, count, list, search)
    clipstore train                        train Model A on images that carry prompts
    clipstore heads                        the trained Model A heads
    clipstore describe IMAGE               the prompts that best explain an image
    clipstore eval                         Avg-Cos of zero-shot, Model A, Model B, ensemble
    clipstore finetune                     one embedding for image->image and text->image (MCIP)
    clipstore reembed --model ID           switch the store to another model, atomically
    clipstore rollback                     undo the last switch
    clipstore model relink PATH            tell the store where its moved checkpoint file is
    clipstore world render OUT             render-world images with their prompts (test data)

    \b
    Exit status: 0 on success, 1 for an error (one `Error:` line saying what to do), 2 for a command-line
    usage mistake (click's usage message), 141 when the reader of the output goes away (`| head`).
    """


@main.command(short_help="Embed the images under a folder (incremental).")
@click.argument("folder", type=click.Path())
@_store_options
@click.option("--prune", is_flag=True, help="Remove rows of files under FOLDER that no longer exist.")
@click.option(
    "--max-megapixels",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_MAX_MEGAPIXELS,
    show_default=True,
    help="Reject images larger than this (decompression-bomb guard).",
)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Images per model pass.")
@click.option("--manifest", type=click.Path(dir_okay=False), help="CSV/TSV/JSONL with `path` and `prompt` columns: "
              "the prompts the images were generated from (relative paths are relative to the manifest).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_json_option
@_friendly_errors
def ingest(folder, store_path, model, prune, max_megapixels, batch_size, manifest, quiet, as_json) -> None:
    """Embed the images under FOLDER (recursively) into the store.

    Re-running skips unchanged files; changed files are re-embedded; files that cannot be read are reported
    and skipped. The store is created on first use.
    """
    check_source(folder, prune=prune)  # a mistyped folder must not create an empty store
    store = clipstore.connect(store_path, model=model)
    show_bar = not quiet and sys.stderr.isatty()

    def tell_waiting() -> None:
        click.echo(f"Another clipstore process is writing to {store.path}; waiting for it to finish…", err=True)

    with _StageBar(enabled=show_bar) as bar:  # "embed images", then "prompt bank" when prompts wait for it
        report = store.ingest(
            folder,
            prune=prune,
            max_megapixels=max_megapixels,
            batch_size=batch_size,
            progress=bar.update,
            on_lock_wait=tell_waiting,
            manifest=manifest,
        )
    if as_json:
        _print_json(report.to_dict())
        return
    click.echo(
        f"Added {report.added}, updated {report.updated}, duplicates {report.duplicates}, "
        f"unchanged {report.skipped_unchanged}, pruned {report.pruned}, failed {len(report.failed)} "
        f"(store: {store.path})"
    )
    offered = report.prompts_found + report.prompts_from_earlier_runs
    if offered:
        earlier = f", {report.prompts_from_earlier_runs} left by earlier runs" if report.prompts_from_earlier_runs else ""
        click.echo(
            f"Prompts: {report.prompts_found} found with new images{earlier}; {report.prompts_inserted} of {offered} "
            "kept in the prompt bank (near-duplicates of kept prompts are refused)"
        )
    for failure in report.failed:
        click.echo(f"  failed: {failure.path}: {failure.reason}")
    for warning in report.warnings:
        click.echo(f"Warning: {warning}", err=True)


@main.command(short_help="Text -> image search, best first.")
@click.argument("text")
@_store_options
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Number of results.")
@click.option("--prefix", metavar="PATH", help="Only images stored under a path starting with PATH.")
@_json_option
@_friendly_errors
def search(text, store_path, model, k, prefix, as_json) -> None:
    """Find the images that best match TEXT (text -> image), best first."""
    store = clipstore.connect(store_path, model=model, create=False)
    _print_hits(store.search_text(text, k=k, path_prefix=prefix), as_json)


@main.command(short_help="Image -> image search, best first.")
@click.argument("image", type=click.Path())
@_store_options
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Number of results.")
@click.option("--prefix", metavar="PATH", help="Only images stored under a path starting with PATH.")
@_json_option
@_friendly_errors
def similar(image, store_path, model, k, prefix, as_json) -> None:
    """Find the stored images most similar to IMAGE (image -> image), best first."""
    store = clipstore.connect(store_path, model=model, create=False)
    _print_hits(store.search_image(image, k=k, path_prefix=prefix), as_json)


@main.command(short_help="Where the store is, its counts, model and migrations.")
@_store_options
@_json_option
@_friendly_errors
def info(store_path, model, as_json) -> None:
    """Show where the store is, its counts, its model and its migrations."""
    details = clipstore.connect(store_path, model=model, create=False).info()
    if as_json:
        _print_json(details.to_dict())
        return
    click.echo(f"store:      {details.path}")
    click.echo(f"images:     {details.images}")
    click.echo(f"files:      {details.files}")
    click.echo(f"model:      {details.model['spec']} ({details.model['embed_dim']}-d)")
    threshold = details.prompt_dedup_threshold
    click.echo(f"prompts:    {details.prompts}" + (f" (near-duplicates >= {threshold:g} rejected)" if threshold else ""))
    applied = [m.name for m in details.migrations if m.applied]
    click.echo(f"migrations: {', '.join(applied) or 'none'}")


@main.command(short_help="Apply (or --list) schema migrations.")
@_store_options
@click.option("--list", "list_only", is_flag=True, help="Only list applied and pending migrations; apply nothing.")
@_json_option
@_friendly_errors
def migrate(store_path, model, list_only, as_json) -> None:
    """Apply pending schema migrations to the store (opening a store does this too)."""
    store = clipstore.connect(store_path, model=model, create=False, apply_migrations=not list_only)
    statuses = store.migrations()
    if as_json:
        _print_json({"migrations": [status.to_dict() for status in statuses]})
        return
    for status in statuses:
        state = f"applied {status.applied_at}" if status.applied else "pending"
        click.echo(f"{status.name}  {state}  {status.description}")


@main.group(short_help="The prompt bank: add, remove, count, list, search.")
def prompts() -> None:
    """The prompt bank: a de-duplicated corpus of prompts (cosine >= 0.85 near-duplicates are rejected)."""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _echo_first(lines: list[str], limit: int = 20) -> None:
    """Print the first `limit` lines of a list, then how many were left out."""
    for line in lines[:limit]:
        click.echo(line)
    if len(lines) > limit:
        click.echo(f"  … and {len(lines) - limit} more (use --json for all)")


@prompts.command("add", short_help="Add the prompts of text/CSV/JSONL/Parquet files.")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@_store_options
@click.option("--column", metavar="NAME", help="Column (CSV/TSV/Parquet) or key (JSONL/JSON) holding the prompt "
              f"[default: the first of {', '.join(PROMPT_COLUMNS)} the file has].")
@click.option("--source", help="Label stored with each prompt [default: the file name].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_json_option
@_friendly_errors
def prompts_add(files, store_path, model, column, source, quiet, as_json) -> None:
    """Add the prompts of FILES to the bank: UTF-8 .txt (one per line), .csv/.tsv, .jsonl, .json, .parquet.

    Prompts are considered in file order; one whose MiniLM cosine with an already kept prompt is >= 0.85 is
    rejected and listed with the prompt it duplicates, one holding control characters is rejected as invalid.
    A file that is not prompt text (an image, a binary file) is refused and nothing is added.
    """
    for file in files:
        check_prompt_file(file)  # `prompts add photo.png` must not create an empty store
    store = clipstore.connect(store_path, model=model)
    with _ProgressBar(enabled=not quiet and sys.stderr.isatty()) as bar:
        report = store.add_prompt_files(files, column=column, source=source, progress=bar.update)
    if as_json:
        _print_json(report.to_dict())
        return
    rejected = _plural(len(report.duplicates), "near-duplicate")
    if report.rejected:
        rejected += f" and {_plural(len(report.rejected), 'invalid prompt')}"
    click.echo(f"Kept {_plural(report.inserted, 'prompt')}; rejected {rejected}.")
    _echo_first([f"  {d.similarity:.3f}  {d.text!r} duplicates {d.kept_text!r}" for d in report.duplicates])
    _echo_first([f"  invalid  {r.text!r}: {r.reason}" for r in report.rejected])


@prompts.command("remove", short_help="Remove prompts by id, source or matching text.")
@_store_options
@click.option("--id", "ids", multiple=True, metavar="ID", help="A prompt id, or a prefix of at least 6 characters "
              "(`prompts list` shows 12); repeat it, or separate ids with commas, for several.")
@click.option("--source", metavar="LABEL", help="Every prompt with this source label (`prompts list --json` shows them).")
@click.option("--match", metavar="TEXT", help="Every prompt whose text contains TEXT (case-insensitive, no wildcards).")
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@_json_option
@_friendly_errors
def prompts_remove(store_path, model, ids, source, match, dry_run, as_json) -> None:
    """Remove prompts from the bank by id, source label or text (together: prompts matching all).

    Nothing else in the bank changes; a removed prompt frees its place, so a near-duplicate of it can be
    added afterwards. An unknown or ambiguous id removes nothing.
    """
    id_list = [part for value in ids for part in value.replace(",", " ").split()] if ids else None
    report = clipstore.connect(store_path, model=model, create=False).remove_prompts(id_list, source, match, dry_run)
    if as_json:
        _print_json(report.to_dict())
        return
    if not report.prompts:
        click.echo("No prompt matches; nothing removed.")
        return
    count = _plural(len(report.prompts), "prompt")
    click.echo(f"Would remove {count} (dry run: nothing changed)." if report.dry_run else f"Removed {count}.")
    _echo_first([f"  {p.id[:12]}  {p.text}" for p in report.prompts])


@prompts.command("count", short_help="How many prompts the bank holds.")
@_store_options
@_json_option
@_friendly_errors
def prompts_count(store_path, model, as_json) -> None:
    """Print how many prompts the bank holds."""
    count = clipstore.connect(store_path, model=model, create=False).count_prompts()
    if as_json:
        _print_json({"prompts": count})
    else:
        click.echo(count)


@prompts.command("list", short_help="List bank prompts in insertion order.")
@_store_options
@click.option("--limit", type=click.IntRange(0), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@_json_option
@_friendly_errors
def prompts_list(store_path, model, limit, offset, as_json) -> None:
    """List bank prompts in insertion order."""
    rows = clipstore.connect(store_path, model=model, create=False).list_prompts(limit=limit, offset=offset)
    if as_json:
        _print_json({"prompts": [row.to_dict() for row in rows]})
        return
    for row in rows:
        click.echo(f"{row.id[:12]}  {row.text}")


@prompts.command("search", short_help="Bank prompts closest in meaning to a text.")
@click.argument("text")
@_store_options
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Number of results.")
@_json_option
@_friendly_errors
def prompts_search(text, store_path, model, k, as_json) -> None:
    """Find the bank prompts closest in meaning to TEXT (all-MiniLM-L6-v2 cosine)."""
    hits = clipstore.connect(store_path, model=model, create=False).search_prompts(text, k=k)
    if as_json:
        _print_json({"hits": [hit.to_dict() for hit in hits]})
        return
    for hit in hits:
        click.echo(f"{hit.score:.4f}  {hit.text}")


@main.group(short_help="The render world: procedural test images.")
def world() -> None:
    """The render world: procedural images drawn exactly as their prompts say."""


@world.command("render", short_help="Render images with their prompts and a manifest.")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--n", "n", type=click.IntRange(1), default=100, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--split", type=click.Choice(["train", "heldout"]), default="train", show_default=True,
              help="heldout: only shape/colour combinations never drawn in train.")
@click.option("--size", type=click.IntRange(16, 2048), default=128, show_default=True, help="Image side in pixels.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_json_option
@_friendly_errors
def world_render(out, n, seed, split, size, quiet, as_json) -> None:
    """Render N images into OUT/<shape>/ with OUT/manifest.jsonl (path, prompt, labels).

    Each PNG also carries its prompt in a `parameters` text chunk, as Stable Diffusion front ends write it.
    """
    from clipstore.world import render_folder

    with _ProgressBar(enabled=not quiet and sys.stderr.isatty()) as bar:
        manifest = render_folder(out, n, seed=seed, split=split, size=size, progress=bar.update)
    if as_json:
        _print_json(manifest.to_dict())
    else:
        click.echo(f"rendered {manifest.count} images into {manifest.folder} (manifest: {manifest.manifest})")


@main.command(short_help="Try clipstore offline on rendered sample images.")
@click.argument("out", type=click.Path(file_okay=False), default="clipstore-demo")
@click.option("--n", "n", type=click.IntRange(10), default=300, show_default=True, help="Images to render.")
@click.option("-k", "k", type=click.IntRange(1), default=3, show_default=True, help="Hits per search.")
@_json_option
@_friendly_errors
def demo(out, n, k, as_json) -> None:
    """Try clipstore offline: render N images into OUT, ingest them with clipstore-mini, search them.

    Everything is written under OUT (default ./clipstore-demo): OUT/images and OUT/demo.clipstore.
    """
    from clipstore.demo import demo_summary, run_demo

    result = run_demo(out, n=n, k=k)
    if as_json:
        _print_json(result.to_dict())
        return
    for line in demo_summary(result):
        click.echo(line)


@main.command(short_help="Train Model A and tune Model B and the ensemble.")
@_store_options
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--lr-vision", type=click.FloatRange(min=0), default=1e-5, show_default=True, help="Learning rate of the CLIP vision tower.")
@click.option("--lr-fc", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="Learning rate of FC1/Norm1/FC2/Norm2.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.05, show_default=True)
@click.option("--warmup", "warmup_fraction", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="Warm-up share of the steps.")
@click.option("--patience", type=click.IntRange(1), default=4, show_default=True, help="Early stopping: epochs without improvement.")
@click.option("--freeze-vision", is_flag=True, help="Train the head only, on CLIP embeddings of augmented views (fast on CPU).")
@click.option("--mix", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Eq. 3: weight of Norm1_Out against Norm2_Out.")
@click.option("--no-augment", is_flag=True, help="No image rotations, crops and flips.")
@click.option("--views", type=click.IntRange(0), default=4, show_default=True, help="Augmented views per image (with --freeze-vision).")
@click.option("--text-augment", type=click.IntRange(0), default=0, show_default=True, help="Prompt variants per pair (synonyms, phrase shuffle).")
@click.option("--dedup-threshold", type=click.FloatRange(0, 1), default=0.85, show_default=True, help="Filter training prompts at this cosine.")
@click.option("--no-filter", is_flag=True, help="Train on every pair (no dedup of training prompts).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_json_option
@_friendly_errors
def train(store_path, model, epochs, batch_size, lr_vision, lr_fc, weight_decay, warmup_fraction, patience, freeze_vision,
          mix, no_augment, views, text_augment, dedup_threshold, no_filter, seed, quiet, as_json) -> None:
    """Train Model A on the store's (image, prompt) pairs and tune Model B and the ensemble.

    The head is saved in the store with its validation scores; `clipstore describe` uses the newest one. An
    interrupted run resumes from its last epoch when started again with the same options.
    """
    from clipstore.training import TrainOptions

    options = TrainOptions(
        epochs=epochs, batch_size=batch_size, lr_vision=lr_vision, lr_fc=lr_fc, weight_decay=weight_decay,
        warmup_fraction=warmup_fraction, patience=patience, freeze_vision=freeze_vision, mix=mix,
        augment=not no_augment, views=views, text_augment=text_augment,
        dedup_threshold=None if no_filter else dedup_threshold, seed=seed,
    )
    store = clipstore.connect(store_path, model=model, create=False)
    with _StageBar(enabled=not quiet and sys.stderr.isatty()) as bar:
        report = store.train(options, progress=bar.update)
    if as_json:
        _print_json(report.to_dict())
        return
    click.echo(f"Trained Model A head {report.head_id} ({'vision tower + head' if report.vision_tuned else 'head only'})")
    click.echo(f"  pairs: {report.train_pairs} train ({report.filtered_out} filtered as near-duplicates), {report.validation_pairs} validation")
    click.echo(f"  epochs: {report.epochs_run} (best {report.best_epoch}{', stopped early' if report.stopped_early else ''})")
    for name, value in report.validation.items():
        click.echo(f"  validation Avg-Cos {name:10s} {value:.4f}")
    click.echo(f"  ensemble alpha {report.ensemble_alpha:g}; Model B K={report.knn['k']} Distance_Dim={report.knn['distance_dim']:g}")
    for note in report.notes:
        click.echo(f"Note: {note}", err=True)


@main.command(short_help="List the trained Model A heads, newest first.")
@_store_options
@_json_option
@_friendly_errors
def heads(store_path, model, as_json) -> None:
    """List the trained Model A heads, newest first."""
    infos = clipstore.connect(store_path, model=model, create=False).heads()
    if as_json:
        _print_json({"heads": [info.to_dict() for info in infos]})
        return
    if not infos:
        click.echo("No trained Model A heads. Train one with: clipstore train")
    for info in infos:
        flag = "  STALE (trained on another encoder)" if info.stale else ""
        click.echo(f"{info.id}  {info.created_at}  val Avg-Cos {info.validation_avg_cos:.4f}  alpha {info.ensemble_alpha:g}"
                   f"  {'tower+head' if info.vision_tuned else 'head only'}{flag}")


@main.command(short_help="The prompts that best explain an image (or a folder).")
@click.argument("image", type=click.Path())
@_store_options
@click.option("-k", "k", type=click.IntRange(1), help="Model B neighbours [default: the head's tuned K, else 20].")
@click.option("--alpha", type=click.FloatRange(0, 1), help="Eq. 6 weight of Model A [default: the head's tuned alpha].")
@click.option("--top", type=click.IntRange(1), default=5, show_default=True, help="Prompts to show.")
@click.option("--head", help="Model A head id (prefix) or folder [default: the newest].")
@click.option("--with-images", is_flag=True, help="Model B also uses the prompts of the most similar stored images.")
@click.option("--out", type=click.Path(dir_okay=False), help="For a folder: write one JSON line per image to this file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_json_option
@_friendly_errors
def describe(image, store_path, model, k, alpha, top, head, with_images, out, quiet, as_json) -> None:
    """The prompts that best explain IMAGE; for a folder, every image under it (with --out FILE)."""
    import os

    store = clipstore.connect(store_path, model=model, create=False)
    if os.path.isdir(os.path.expanduser(image)):
        if not out:
            raise click.UsageError("IMAGE is a folder: give --out FILE for the JSON lines of its descriptions.")
        described = failed = 0
        with open(out, "w", encoding="utf-8") as lines, _ProgressBar(enabled=not quiet and sys.stderr.isatty()) as bar:
            for item in store.describe_folder(image, k=k, alpha=alpha, top=top, head=head, use_images=with_images, progress=bar.update):
                if isinstance(item, clipstore.FileFailure):
                    failed += 1
                    record = {"path": item.path, "error": item.reason}
                else:
                    described += 1
                    record = {"path": item.path, **item.description.to_dict()}
                lines.write(json.dumps(record, ensure_ascii=False) + "\n")
        if as_json:
            _print_json({"described": described, "failed": failed, "out": os.path.abspath(out)})
        else:
            click.echo(f"Described {described} images, {failed} failed; wrote {out}")
        return
    description = store.describe(image, k=k, alpha=alpha, top=top, head=head, use_images=with_images)
    if as_json:
        _print_json(description.to_dict())
        return
    if not description.prompts:
        click.echo("(the prompt bank is empty: no prompt text to show; see --json for the embedding)")
    for hit in description.prompts:
        click.echo(f"{hit.score:.4f}  {hit.text}")
    click.echo(f"({description.method}, alpha {description.alpha:g}, K {description.knn.k})", err=True)
    for note in description.notes:
        click.echo(f"Note: {note}", err=True)


@main.command("eval", short_help="Avg-Cos table (eq. 8), or --retrieval benchmarks.")
@_store_options
@click.option("--pairs", type=click.Path(dir_okay=False), help="Held-out (path, prompt) manifest (CSV/TSV/JSONL) [default: the store's test split].")
@click.option("--head", help="Model A head id (prefix) or folder [default: the newest].")
@click.option("--retrieval", is_flag=True, help="Retrieval benchmarks instead: image->image, text->image, zero-shot, k-NN.")
@click.option("--compare", multiple=True, metavar="SPEC|ID", help="With --retrieval: models to score beside the store's [default: the base model when the store uses one "
              "of its fine-tuned models, else its newest fine-tuned model].")
@click.option("--labels-from-folders", is_flag=True, help="With --retrieval: class label = folder name.")
@click.option("--label-manifest", type=click.Path(dir_okay=False), help="With --retrieval: CSV/TSV/JSONL with path and label.")
@click.option("--label-field", default="label", show_default=True)
@click.option("--template", help='With --retrieval: zero-shot prompt template [default: "a photo of a {label}"].')
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="With --retrieval: mAP@k and k-NN k.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_json_option
@_friendly_errors
def eval_(store_path, model, pairs, head, retrieval, compare, labels_from_folders, label_manifest, label_field, template, k, quiet, as_json) -> None:
    """Avg-Cos (eq. 8) of zero-shot CLIP, the data-filter ablation, Model A, Model B and the ensemble
    (or, with --retrieval, the retrieval benchmarks of the store's model beside fine-tuned ones)."""
    store = clipstore.connect(store_path, model=model, create=False)
    if retrieval:
        with _StageBar(enabled=not quiet and sys.stderr.isatty()) as bar:
            result = store.evaluate_retrieval(
                models=list(compare) or None, labels_from_folders=labels_from_folders, label_manifest=label_manifest,
                label_field=label_field, k=k, template=template, progress=bar.update,
            )
        if as_json:
            _print_json(result.to_dict())
            return
        click.echo(f"{result.images} held-out labelled images, {result.classes} classes, {result.queries_with_prompts} text queries")
        width = max([len("model"), *(len(row.model) for row in result.rows)])
        click.echo(f"{'model':{width}s} mAP@{k:<3d} i2i R@1  t2i R@1  t2i R@10  zero-shot  k-NN")
        for row in result.rows:
            click.echo(f"{row.model:{width}s} {row.image_map:7.4f} {row.image_r1:8.4f} {row.text_r1:8.4f} {row.text_r10:9.4f} {row.zero_shot_accuracy:10.4f} {row.knn_accuracy:6.4f}")
        return
    with _StageBar(enabled=not quiet and sys.stderr.isatty()) as bar:
        report = store.evaluate(pairs=pairs, head=head, progress=bar.update)
    if as_json:
        _print_json(report.to_dict())
        return
    click.echo(f"Avg-Cos on {report.rows[0].n if report.rows else 0} held-out pairs ({report.pairs}):")
    width = max((len(row.name) for row in report.rows), default=10)
    for row in report.rows:
        click.echo(f"  {row.name:{width}s}  {row.avg_cos:.4f}")
    for note in report.notes:
        click.echo(f"Note: {note}", err=True)


@main.command(short_help="Fine-tune the image encoder (MCIP or 2SFT).")
@_store_options
@click.option("--method", type=click.Choice(["mcip", "2sft"]), default="mcip", show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(2), default=64, show_default=True)
@click.option("--lr-backbone", type=click.FloatRange(min=0), default=1e-5, show_default=True, help="Vision transformer blocks.")
@click.option("--lr-head", type=click.FloatRange(min=0), default=1e-4, show_default=True, help="Vision projection and margin centres.")
@click.option("--lr-text", type=click.FloatRange(min=0), default=1e-5, show_default=True, help="Text encoder (2SFT re-alignment).")
@click.option("--realign-epochs", type=click.IntRange(1), default=5, show_default=True, help="2SFT stage 2 epochs.")
@click.option("--captions", type=click.IntRange(0), default=5, show_default=True, help="Pseudo-captions per image from the bank.")
@click.option("--caption-threshold", type=float, help="Minimum CLIP similarity of a pseudo-caption [default: none].")
@click.option("--margin", type=click.FloatRange(0, 1), default=0.2, show_default=True, help="ArcMargin angular margin.")
@click.option("--scale", type=click.FloatRange(min=1), default=30.0, show_default=True, help="ArcMargin logit scale.")
@click.option("--lambda-captions", type=click.FloatRange(min=0), default=0.5, show_default=True)
@click.option("--lambda-labels", type=click.FloatRange(min=0), default=0.5, show_default=True)
@click.option("--labels-from-folders", is_flag=True, help="Class label of an image = the name of its folder.")
@click.option("--label-manifest", type=click.Path(dir_okay=False), help="CSV/TSV/JSONL with path and a label field.")
@click.option("--label-field", default="label", show_default=True, help="Label field of the manifest (dotted for nested JSON).")
@click.option("--no-augment", is_flag=True, help="No image rotations, crops and flips.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--apply", is_flag=True, help="Re-embed the store with the result and switch to it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_json_option
@_friendly_errors
def finetune(store_path, model, method, epochs, batch_size, lr_backbone, lr_head, lr_text, realign_epochs, captions,
             caption_threshold, margin, scale, lambda_captions, lambda_labels, labels_from_folders, label_manifest,
             label_field, no_augment, seed, apply, quiet, as_json) -> None:
    """Fine-tune the image encoder for image->image search, keeping text alignment (MCIP or 2SFT).

    The fine-tuned model is saved in the store; `clipstore reembed --model ID` (or --apply) switches to it.
    """
    from clipstore.finetune import FinetuneOptions

    options = FinetuneOptions(
        method=method, epochs=epochs, batch_size=batch_size, lr_backbone=lr_backbone, lr_head=lr_head, lr_text=lr_text,
        realign_epochs=realign_epochs, captions=captions, caption_threshold=caption_threshold, margin=margin,
        scale=scale, lambda_captions=lambda_captions, lambda_labels=lambda_labels,
        labels_from_folders=labels_from_folders, label_manifest=label_manifest, label_field=label_field,
        augment=not no_augment, seed=seed,
    )
    store = clipstore.connect(store_path, model=model, create=False)
    with _StageBar(enabled=not quiet and sys.stderr.isatty()) as bar:
        report = store.finetune(options, apply=apply, progress=bar.update)
    if as_json:
        _print_json(report.to_dict())
        return
    click.echo(f"Fine-tuned model {report.model_id} ({report.method}) saved in {report.folder}")
    click.echo(f"  images: {report.train_images} train, {report.validation_images} validation; {report.classes} classes; "
               f"{report.captions_per_image:.1f} pseudo-captions per image")
    click.echo(f"  {report.validation_metric}: {report.validation_before:.4f} -> {report.validation_after:.4f}")
    if report.switch is not None:
        _echo_switch(report.switch)
    else:
        click.echo(f"Switch the store to it with: clipstore reembed --model {report.model_id}")


@main.command(short_help="Re-embed with another model and switch atomically.")
@_store_option
@click.option("--model", "target", required=True, metavar="SPEC|ID",
              help="The new model: a fine-tuned model of this store (id or folder) or a model spec (ARCH:TAG, ARCH:/path).")
@click.option("--drop-missing", is_flag=True, help="Leave out images whose files can no longer be read.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_json_option
@_friendly_errors
def reembed(store_path, target, drop_missing, batch_size, quiet, as_json) -> None:
    """Re-embed every image with another model and switch to it atomically (resumable; see rollback)."""
    store = clipstore.connect(store_path, create=False)
    with _StageBar(enabled=not quiet and sys.stderr.isatty()) as bar:
        report = store.reembed(target, drop_missing=drop_missing, batch_size=batch_size, progress=bar.update)
    if as_json:
        _print_json(report.to_dict())
        return
    _echo_switch(report)


def _echo_switch(report: "ReembedReport") -> None:
    click.echo(f"The store now uses {report.model} (switched from {report.previous_model}): {report.images} images "
               f"({report.embedded} embedded now, {report.resumed} already embedded), {report.prompts_embedded} "
               "prompts re-embedded")
    for failure in report.dropped:
        click.echo(f"  dropped: {failure.path}: {failure.reason}")
    click.echo(f"Undo with: clipstore rollback (back to {report.previous_model})")


@main.command(short_help="Undo the last model switch.")
@_store_option
@_json_option
@_friendly_errors
def rollback(store_path, as_json) -> None:
    """Undo the last model switch (re-embed): the previous model, vectors and file rows come back."""
    report = clipstore.connect(store_path, create=False).rollback()
    if as_json:
        _print_json(report.to_dict())
    else:
        click.echo(f"Rolled back from {report.previous_model} to {report.model} (files table version {report.files_version}, tag {report.tag})")


@main.group(short_help="The store's model: relink a moved checkpoint.")
def model() -> None:
    """The store's model and where its checkpoint file is."""


@model.command("relink", short_help="Point the store at its moved checkpoint file.")
@click.argument("path", type=click.Path(dir_okay=False))
@_store_option
@_json_option
@_friendly_errors
def model_relink(path, store_path, as_json) -> None:
    """Tell the store that the checkpoint file of its model moved to PATH (checked by SHA-256; remembered).

    Only for checkpoints outside the store: fine-tuned models inside it move with the store.
    """
    report = clipstore.connect(store_path, create=False).relink_model(path)
    if as_json:
        _print_json(report.to_dict())
    else:
        click.echo(f"The store now loads {report.model} (SHA-256 {report.sha256[:12]}…; was {report.previous_path})")


class _StageBar:
    """A tqdm bar for progress(stage, done, total) callbacks: a new bar for each stage."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None
        self._stage = None

    def __enter__(self) -> "_StageBar":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self._bar is None or stage != self._stage:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=total, desc=stage, file=sys.stderr, dynamic_ncols=True)
            self._stage = stage
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()


class _ProgressBar:
    """A tqdm bar on stderr driven by a progress(done, total) callback; does nothing when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None

    def __enter__(self) -> "_ProgressBar":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True)
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()


if __name__ == "__main__":  # pragma: no cover
    main()
