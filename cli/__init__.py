"""The `clipstore` command line: a thin layer over the Python API (installed as `clipstore.cli`).

Each command opens the store, makes one Store call, and renders the result as text or, with `--json`, as
JSON on stdout. Library errors become one line on stderr and exit status 1.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import click

import clipstore
from clipstore.errors import ClipstoreError
from clipstore.imaging import DEFAULT_MAX_MEGAPIXELS
from clipstore.paths import STORE_ENV


def _store_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--model",
        "model",
        envvar="CLIPSTORE_MODEL",
        metavar="SPEC",
        help="CLIP model: ARCH:TAG (default for a new store: ViT-B-32:laion2b_s34b_b79k), ARCH:/path/to/checkpoint, "
        "or clipstore-mini (offline). For an existing store it must match the store's model.",
    )(func)
    return click.option(
        "--store",
        "store_path",
        envvar=STORE_ENV,
        metavar="PATH",
        type=click.Path(file_okay=False),
        help=f"Store folder (default: ${STORE_ENV}, else the per-user data dir; see `clipstore info`).",
    )(func)


def _json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(func)


def _friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ClipstoreError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


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
    clipstore ingest ~/photos              embed every image under a folder (incremental)
    clipstore search "a dog on a beach"    text -> image search
    clipstore similar ~/photos/dog.jpg     image -> image search
    clipstore info                         where the store is, counts, model, migrations
    """


@main.command()
@click.argument("folder", type=click.Path())
@_store_options
@click.option("--prune", is_flag=True, help="Remove rows of files under FOLDER that no longer exist.")
@click.option(
    "--max-megapixels",
    type=float,
    default=DEFAULT_MAX_MEGAPIXELS,
    show_default=True,
    help="Reject images larger than this (decompression-bomb guard).",
)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Images per model pass.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_json_option
@_friendly_errors
def ingest(folder, store_path, model, prune, max_megapixels, batch_size, quiet, as_json) -> None:
    """Embed the images under FOLDER (recursively) into the store.

    Re-running skips unchanged files; changed files are re-embedded; files that cannot be read are reported
    and skipped. The store is created on first use.
    """
    store = clipstore.connect(store_path, model=model)
    show_bar = not quiet and sys.stderr.isatty()
    with _ProgressBar(enabled=show_bar) as bar:
        report = store.ingest(
            folder, prune=prune, max_megapixels=max_megapixels, batch_size=batch_size, progress=bar.update
        )
    if as_json:
        _print_json(report.to_dict())
        return
    click.echo(
        f"Added {report.added}, updated {report.updated}, duplicates {report.duplicates}, "
        f"unchanged {report.skipped_unchanged}, pruned {report.pruned}, failed {len(report.failed)} "
        f"(store: {store.path})"
    )
    for failure in report.failed:
        click.echo(f"  failed: {failure.path}: {failure.reason}")


@main.command()
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


@main.command()
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


@main.command()
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
    applied = [m.name for m in details.migrations if m.applied]
    click.echo(f"migrations: {', '.join(applied) or 'none'}")


@main.command()
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


class _ProgressBar:
    """A tqdm bar on stderr driven by ingest's progress(done, total) callback; does nothing when disabled."""

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
