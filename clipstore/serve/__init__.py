"""`clipstore serve`: a local web page to search, browse and describe a store (FastAPI, Jinja2 templates, htmx).

A client of the `Store`, like the command line: `create_app(store, options)` builds the app around one open
store (the model loaded once, shared by every request); `server.serve` listens and runs it with uvicorn.
Importing this package imports no web framework: `options` is light, and `app`/`server` import FastAPI and
uvicorn (the `serve` extra, `pip install 'clipstore[serve]'`) when they are imported themselves.

Modules: `options` (ServeOptions, the loopback check, the extra's check), `app` (routes, errors, the request
limits), `images` (image bytes by id, verified against the id; thumbnails), `uploads` (query images held for
a while), `jobs` (ingest from the page, one at a time, with its progress), `server` (listening), and the
package data `templates/` and `static/` (htmx, vendored with its licence notice; the page's script and style).
"""

from clipstore.serve.options import ServeOptions, host_warning, is_loopback, require_serve_extra

__all__ = ["ServeOptions", "host_warning", "is_loopback", "require_serve_extra"]
