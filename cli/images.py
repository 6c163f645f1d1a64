"""Image commands: ingest, search, similar, index, info, migrate, demo and the render world."""

from __future__ import annotations

from typing import Any, Callable

import click

import clipstore
from clipstore.ingest.run import IngestOptions, check_source
from clipstore.paths import is_uri

from clipstore.cli.common import ProgressBar, clipstore_errors, field_option, json_option, print_json, quiet_option, show_progress, store_options


def _print_hits(hits: list[clipstore.SearchHit], as_json: bool) -> None:
    if as_json:
        print_json({"hits": [hit.to_dict() for hit in hits]})
        return
    if not hits:
        click.echo("No images in the store match. Ingest a folder first: clipstore ingest FOLDER")
    for hit in hits:
        click.echo(f"{hit.score:.4f}  {hit.path}")


@click.command(short_help="Embed the images under a folder (incremental).")
@click.argument("folder", type=click.Path())
@store_options
@click.option("--prune", is_flag=True, help="Remove rows of files under FOLDER that no longer exist.")
@field_option(IngestOptions, "max_megapixels", type=click.FloatRange(min=0, min_open=True),
              help="Reject images larger than this (decompression-bomb guard).")
@field_option(IngestOptions, "batch_size", type=click.IntRange(1), help="Images per model pass.")
@click.option("--manifest", type=click.Path(dir_okay=False), help="CSV/TSV/JSONL with `path` and `prompt` columns: "
              "the prompts the images were generated from (relative paths are relative to the manifest).")
@click.option("--ray", "ray_address", metavar="ADDRESS", help="Read, decode and embed on a Ray cluster: auto (the "
              "cluster RAY_ADDRESS names or `ray start` runs here, else a new one on this machine, 127.0.0.1 only), "
              "local, or the cluster's address (ray://HEAD:10001). Needs pip install 'clipstore[distributed]'.")
@click.option("--ray-workers", type=click.IntRange(1), help="With --ray: embed workers (default: one per GPU, else "
              "one per machine, on all of its cores; N splits the cluster's cores between N workers).")
@quiet_option
@json_option
@clipstore_errors
def ingest(folder, store_path, storage_options, model, prune, max_megapixels, batch_size, manifest, ray_address, ray_workers,
           quiet, as_json) -> None:
    """Embed the images under FOLDER (recursively) into the store.

    FOLDER is a local folder or file, or an object-store prefix (s3://bucket/photos; endpoint and credentials
    from AWS_ENDPOINT, AWS_ACCESS_KEY_ID, ... or, for a store on S3, its --storage-option). Re-running skips
    unchanged files; changed files are re-embedded; files that cannot be read are reported and skipped. The
    store is created on first use. With --ray the work runs on a Ray cluster, with the same result.
    """
    if ray_workers is not None and ray_address is None:
        raise click.UsageError("--ray-workers needs --ray.")
    source_options = storage_options if store_path and is_uri(store_path) else None
    check_source(folder, prune=prune, storage_options=source_options)  # a mistyped folder must not create an empty store
    store = clipstore.connect(store_path, storage_options=storage_options, model=model)
    engine = {"engine": "ray", "ray": clipstore.RayOptions(address=ray_address, workers=ray_workers)} if ray_address else {}
    show_bar = show_progress(quiet)

    def tell_waiting() -> None:
        click.echo(f"Another clipstore process is writing to {store.path}; waiting for it to finish…", err=True)

    with ProgressBar(enabled=show_bar) as bar:  # "embed images", then "prompt bank" when prompts wait for it
        report = store.ingest(
            folder,
            prune=prune,
            max_megapixels=max_megapixels,
            batch_size=batch_size,
            progress=bar.update,
            on_lock_wait=tell_waiting,
            manifest=manifest,
            **engine,
        )
    if as_json:
        print_json(report.to_dict())
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


def _search_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options `search` and `similar` share: store, model, -k, --prefix, --json, and error handling."""
    for decorate in reversed((
        store_options,
        click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Number of results."),
        click.option("--prefix", metavar="PATH", help="Only images stored under a path starting with PATH (always exact)."),
        click.option("--exact", is_flag=True, help="Compare every vector even when the store has a vector index."),
        json_option,
        clipstore_errors,
    )):
        func = decorate(func)
    return func


@click.command(short_help="Text -> image search, best first.")
@click.argument("text")
@_search_options
def search(text, store_path, storage_options, model, k, prefix, exact, as_json) -> None:
    """Find the images that best match TEXT (text -> image), best first."""
    store = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False)
    _print_hits(store.search_text(text, k=k, path_prefix=prefix, exact=exact), as_json)


@click.command(short_help="Image -> image search, best first.")
@click.argument("image", type=click.Path())
@_search_options
def similar(image, store_path, storage_options, model, k, prefix, exact, as_json) -> None:
    """Find the stored images most similar to IMAGE (image -> image), best first."""
    store = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False)
    _print_hits(store.search_image(image, k=k, path_prefix=prefix, exact=exact), as_json)


@click.command(short_help="Build or update the vector index that speeds up search.")
@store_options
@click.option("--rebuild", is_flag=True, help="Train a new index over every image instead of updating the existing one.")
@click.option(
    "--threshold",
    type=click.IntRange(min=0),
    help="Only set the row count from which ingest and prompt additions index the store by themselves "
    "(default 50,000), and build nothing now.",
)
@quiet_option
@json_option
@clipstore_errors
def index(store_path, storage_options, model, rebuild, threshold, quiet, as_json) -> None:
    """Build a LanceDB vector index (IVF_HNSW_SQ, cosine) on the store's images, or bring the existing one up to
    date with the images ingested since. Searches then use it (--exact bypasses it). Stores are indexed
    automatically once they reach the index threshold; --threshold N changes it."""
    store = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False)
    if threshold is not None:
        if rebuild:
            raise click.UsageError("--threshold only sets the threshold; run --rebuild separately.")
        store.set_index_threshold(threshold)
        if as_json:
            print_json({"index_threshold": threshold})
        else:
            click.echo(f"Index threshold set to {threshold} rows (the next ingest or prompt addition applies it).")
        return
    with ProgressBar(enabled=show_progress(quiet)) as bar:
        report = store.build_index(rebuild=rebuild, progress=bar.update)
    if as_json:
        print_json(report.to_dict())
        return
    click.echo(
        f"Index {report.action} on {report.table} ({report.index_type}): {report.rows_indexed} images indexed, "
        f"{report.rows_not_indexed} not yet"
    )


@click.command(short_help="Where the store is, its counts, model and migrations.")
@store_options
@json_option
@clipstore_errors
def info(store_path, storage_options, model, as_json) -> None:
    """Show where the store is, its counts, its model and its migrations."""
    details = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False).info()
    if as_json:
        print_json(details.to_dict())
        return
    click.echo(f"store:      {details.path}")
    click.echo(f"images:     {details.images}")
    click.echo(f"files:      {details.files}")
    click.echo(f"model:      {details.model['spec']} ({details.model['embed_dim']}-d)")
    threshold = details.prompt_dedup_threshold
    click.echo(f"prompts:    {details.prompts}" + (f" (near-duplicates >= {threshold:g} rejected)" if threshold else ""))
    state = details.index
    click.echo(
        f"index:      {state['type']} ({state['rows_indexed']} indexed, {state['rows_not_indexed']} not yet)"
        if state
        else f"index:      none (searches compare every vector; built by itself at {details.index_threshold:,} "
        "images, or now with clipstore index)"
    )
    applied = [m.name for m in details.migrations if m.applied]
    click.echo(f"migrations: {', '.join(applied) or 'none'}")


@click.command(short_help="Apply (or --list) schema migrations.")
@store_options
@click.option("--list", "list_only", is_flag=True, help="Only list applied and pending migrations; apply nothing.")
@json_option
@clipstore_errors
def migrate(store_path, storage_options, model, list_only, as_json) -> None:
    """Apply pending schema migrations to the store (opening a store does this too)."""
    store = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False, apply_migrations=not list_only)
    statuses = store.migrations()
    if as_json:
        print_json({"migrations": [status.to_dict() for status in statuses]})
        return
    for status in statuses:
        state = f"applied {status.applied_at}" if status.applied else "pending"
        click.echo(f"{status.name}  {state}  {status.description}")


@click.group(short_help="The render world: procedural test images.")
def world() -> None:
    """The render world: procedural images drawn exactly as their prompts say."""


@world.command("render", short_help="Render images with their prompts and a manifest.")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--n", "n", type=click.IntRange(1), default=100, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--split", type=click.Choice(["train", "heldout"]), default="train", show_default=True,
              help="heldout: only shape/colour combinations never drawn in train.")
@click.option("--size", type=click.IntRange(16, 2048), default=128, show_default=True, help="Image side in pixels.")
@quiet_option
@json_option
@clipstore_errors
def world_render(out, n, seed, split, size, quiet, as_json) -> None:
    """Render N images into OUT/<shape>/ with OUT/manifest.jsonl (path, prompt, labels).

    Each PNG also carries its prompt in a `parameters` text chunk, as Stable Diffusion front ends write it.
    """
    from clipstore.world import render_folder

    with ProgressBar(enabled=show_progress(quiet)) as bar:
        manifest = render_folder(out, n, seed=seed, split=split, size=size, progress=bar.update)
    if as_json:
        print_json(manifest.to_dict())
    else:
        click.echo(f"rendered {manifest.count} images into {manifest.folder} (manifest: {manifest.manifest})")


@click.command(short_help="Try clipstore offline on rendered sample images.")
@click.argument("out", type=click.Path(file_okay=False), default="clipstore-demo")
@click.option("--n", "n", type=click.IntRange(10), default=300, show_default=True, help="Images to render.")
@click.option("-k", "k", type=click.IntRange(1), default=3, show_default=True, help="Hits per search.")
@json_option
@clipstore_errors
def demo(out, n, k, as_json) -> None:
    """Try clipstore offline: render N images into OUT, ingest them with clipstore-mini, search them.

    Everything is written under OUT (default ./clipstore-demo): OUT/images and OUT/demo.clipstore.
    """
    from clipstore.demo import demo_summary, run_demo

    result = run_demo(out, n=n, k=k)
    if as_json:
        print_json(result.to_dict())
        return
    for line in demo_summary(result):
        click.echo(line)


@click.command(short_help="Delete the files no table version names.")
@store_options
@json_option
@clipstore_errors
def gc(store_path, storage_options, model, as_json) -> None:
    """Delete the store's files that no version of its tables names: fragments a distributed ingest wrote and
    never committed (it was killed, or a worker died and ran its batch again). Every table version is kept.
    The next ingest does this by itself after a killed distributed ingest."""
    store = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False)
    report = store.gc()
    if as_json:
        print_json(report.to_dict())
        return
    click.echo(f"Removed {report.files_removed} unreferenced files ({report.bytes_removed} bytes) from {store.path}")
    for table in report.tables:
        click.echo(f"  {table.table}: {table.files} files, {table.bytes} bytes")


COMMANDS = (ingest, search, similar, index, info, migrate, gc, world, demo)
