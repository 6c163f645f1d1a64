"""`clipstore serve`: the local web page (the `clipstore.serve` package; FastAPI and uvicorn load only here)."""

from __future__ import annotations

import json

import click

import clipstore
from clipstore.serve.options import ServeOptions

from clipstore.cli.common import clipstore_errors, field_option, json_option, options_from, store_options


@click.command(short_help="Serve a local web page to search, browse and describe the store.")
@store_options
@field_option(ServeOptions, "host", metavar="ADDRESS", help="Address to listen on; anything but a loopback address "
              "prints a warning (the page has no login).")
@field_option(ServeOptions, "port", type=click.IntRange(0, 65535), help="Port to listen on (0: any free port).")
@field_option(ServeOptions, "allow_ingest", help="Let the page ingest folders (only folders under a --root).")
@click.option("--root", "roots", multiple=True, type=click.Path(file_okay=False), metavar="DIR",
              help="A folder the page may ingest from, subfolders included (repeatable; needs --allow-ingest).")
@field_option(ServeOptions, "max_upload_mb", type=click.FloatRange(min=0, min_open=True),
              help="Largest upload (a query image) accepted, in MB; larger ones are refused with 413.")
@field_option(ServeOptions, "max_megapixels", type=click.FloatRange(min=0, min_open=True),
              help="Reject larger images (uploads, thumbnails, describe): the decompression-bomb guard.")
@json_option
@clipstore_errors
def serve(store_path, storage_options, model, host, port, allow_ingest, roots, max_upload_mb, max_megapixels, as_json) -> None:
    """Serve a web page to search the store (text -> image, image -> image, combined), browse its images and
    describe them, until Ctrl-C.

    It listens on http://127.0.0.1:8765 (--host, --port), prints that URL and opens nothing by itself. The store
    is read-only unless --allow-ingest, and then the page may ingest only folders under the --root folders.
    With --json the first line of output is one JSON object: {"url", "store", "allow_ingest", "roots"}.
    Needs the serve extra: pip install 'clipstore[serve]'.
    """
    from clipstore.serve import host_warning, require_serve_extra

    options = options_from(ServeOptions, dict(locals()))
    require_serve_extra()  # before the store is opened and the model loaded
    warning = host_warning(host)
    if warning:
        click.echo(f"Warning: {warning}", err=True)
    store = clipstore.connect(store_path, storage_options=storage_options, model=model, create=False)

    def ready(url: str) -> None:
        if as_json:
            click.echo(json.dumps({"url": url, "store": store.path, "allow_ingest": options.allow_ingest, "roots": list(options.roots)}))
            return
        click.echo(url)
        ingest = f"ingest allowed under {', '.join(options.roots)}" if options.allow_ingest else "read-only"
        click.echo(f"Serving {store.path} ({ingest}). Press Ctrl-C to stop.", err=True)

    from clipstore.serve.server import serve as run

    try:
        run(store, options, on_ready=ready)
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped: not an error
        click.echo("Stopped.", err=True)


COMMANDS = [serve]
