"""The web app of `clipstore serve`: one page, the HTML fragments htmx swaps into it, and the image bytes.

Every route answers HTML (a whole page for `/`, fragments for the rest), or JSON when the request's Accept header
asks for `application/json` (the same data as the Python API's `to_dict()`). Library errors become 4xx answers
with the library's message; only a bug is a 500.

    GET  /                         the page (q, not, k, prefix, like: a search to show at once)
    GET  /search                   results: q (a text; "-word" or "−word" in it is a negative), not (more
                                   negatives, comma-separated), like (an image id) or upload (a token from
                                   /upload), k, prefix, text_weight, image_weight, negative_weight
    POST /upload                   a query image (multipart field `image`): held, embedded once -> its token
    GET  /query-image              the query image shown beside the search box (like=ID, or none)
    GET  /image/{id}               what the store holds for an image
    GET  /image/{id}/describe      the ensemble's top prompts for it (top)
    GET  /image/{id}/thumb|preview a JPEG, 256 or 1024 px (cached)
    GET  /image/{id}/file          the stored bytes, as ingested
    GET  /info                     the store's counts, model, index, prompt bank and heads
    POST /ingest                   ingest a folder under a --root (only with --allow-ingest)
    GET  /ingest/{job}             that ingest's progress
    GET  /static/...               htmx, the page's script and style
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from clipstore.errors import ClipstoreError, InvalidImageError, InvalidOptionError, NothingToDescribeWithError
from clipstore.serve.guard import Guard
from clipstore.serve.images import ImageFiles, ImageUnavailable, checked_id
from clipstore.serve.jobs import IngestJobs, IngestRefused
from clipstore.serve.options import LOOPBACK_NAMES, ServeOptions
from clipstore.serve.uploads import Uploads

if TYPE_CHECKING:
    from clipstore.results import SearchHit
    from clipstore.store.facade import Store

HERE = Path(__file__).parent
DEFAULT_K = 20
MAX_K = 500
NEGATIVE = re.compile(r"(?:^|\s)[-\u2212](?:\"([^\"]+)\"|(\S+))")
"""A negative inside a query text: "-people", "−people" (U+2212) or -"a crowd of people", after a space."""


def parse_query(text: str) -> tuple[str, list[str]]:
    """Split a search box's text into what to look for and what to leave out: "beach −people" -> ("beach",
    ["people"]); a hyphen inside a word ("black-and-white") is kept."""
    negatives = [quoted or word for quoted, word in NEGATIVE.findall(text)]
    return " ".join(NEGATIVE.sub(" ", text).split()), negatives


class ServerState:
    """What the routes share: the store, the options, the image files, the uploads, the ingest jobs, and one lock
    that queries take (one query at a time runs the model; an ingest runs beside them in its own thread)."""

    def __init__(self, store: "Store", options: ServeOptions):
        from clipstore.encoders.tower_cache import cache_root

        self.store = store
        self.options = options
        cache = options.thumbnail_cache or cache_root()
        self.images = ImageFiles(store, cache, options.max_megapixels)
        self.uploads = Uploads(store, options.max_megapixels)
        self.jobs = IngestJobs(store, options.roots, options.allow_ingest)
        self.queries = threading.Lock()


def create_app(store: "Store", options: ServeOptions | None = None) -> FastAPI:
    """The web app for `store` (opened by the caller and used by every request)."""
    options = options or ServeOptions()
    state = ServerState(store, options)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["basename"] = os.path.basename
    templates.env.filters["dirname"] = os.path.dirname
    templates.env.globals["megabytes"] = lambda size: f"{size / 1024 / 1024:.1f} MB" if size >= 1024 * 1024 else f"{size / 1024:.1f} KB"

    app = FastAPI(title="clipstore", docs_url=None, redoc_url=None, openapi_url=None)  # no CDN-served docs pages
    app.state.clipstore = state
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def render(request: Request, template: str, context: dict[str, Any], data: Any, status: int = 200, headers: dict | None = None) -> Response:
        if wants_json(request):
            return JSONResponse(data, status_code=status, headers=headers)
        return templates.TemplateResponse(request, template, context, status_code=status, headers=headers)

    def message(request: Request, status: int, text: str, kind: str = "error") -> Response:
        return render(request, "message.html", {"message": text, "kind": kind}, {"error": text, "status": status}, status)

    # --- errors: the library's words, with a 4xx status ---------------------------------------------------------

    @app.exception_handler(ClipstoreError)
    async def clipstore_error(request: Request, exc: ClipstoreError) -> Response:
        status = 422 if isinstance(exc, InvalidImageError) else 409 if isinstance(exc, NothingToDescribeWithError) else 400
        text = f"Not an image we can read: {exc}" if isinstance(exc, InvalidImageError) else str(exc)
        return message(request, status, text)

    @app.exception_handler(ImageUnavailable)
    async def image_unavailable(request: Request, exc: ImageUnavailable) -> Response:
        return message(request, exc.status, str(exc))

    @app.exception_handler(IngestRefused)
    async def ingest_refused(request: Request, exc: IngestRefused) -> Response:
        return message(request, exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(part) for part in error['loc'][1:]) or 'request'}: {error['msg']}" for error in exc.errors())
        return message(request, 400, f"Invalid request ({problems}).")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        text = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else f"Nothing here: {request.url.path}"
        return message(request, exc.status_code, str(text))

    # --- the page and searching ---------------------------------------------------------------------------------

    @app.get("/")
    def page(
        request: Request,
        q: str = "",
        not_: str = Query("", alias="not"),
        k: int = Query(DEFAULT_K, ge=1, le=MAX_K),
        prefix: str = "",
        like: str = "",
    ) -> Response:
        results = None
        if q.strip() or like:
            try:
                results = search_results(state, q, not_, k, prefix, like, "", {})
            except (ClipstoreError, ImageUnavailable) as exc:  # the page still opens, saying why there are no results
                results = SearchResults((), {}, str(exc))
        context = {"q": q, "negative": not_, "k": k, "prefix": prefix, "like": like, "results": results, "store": store, "options": options}
        return templates.TemplateResponse(request, "page.html", context)

    @app.get("/search")
    def search(
        request: Request,
        q: str = "",
        not_: str = Query("", alias="not"),
        k: int = Query(DEFAULT_K, ge=1, le=MAX_K),
        prefix: str = "",
        like: str = "",
        upload: str = "",
        text_weight: str = "",
        image_weight: str = "",
        negative_weight: str = "",
    ) -> Response:
        given = {"text": text_weight, "image": image_weight, "negative": negative_weight}
        weights = {name: _number(f"{name}_weight", value) for name, value in given.items() if value.strip()}  # blank: the default
        results = search_results(state, q, not_, k, prefix, like, upload, weights)
        return render(request, "results.html", {"results": results}, results.to_dict())

    @app.post("/upload")
    def upload(request: Request, image: UploadFile = File(...)) -> Response:
        data = image.file.read()
        with state.queries:
            held = state.uploads.add(data, image.filename or "upload")
        context = {"upload": held, "record": None}
        return render(request, "query_image.html", context, held.to_dict(), headers={"HX-Trigger": "search"})

    @app.get("/query-image")
    def query_image(request: Request, like: str = "") -> Response:
        record = None
        if like:
            record = store.image(checked_id(like))
            if record is None:
                raise ImageUnavailable(404, f"This store has no image with id {like}.")
        data = record.to_dict() if record is not None else None
        return render(request, "query_image.html", {"upload": None, "record": record}, data, headers={"HX-Trigger": "search"})

    # --- one image ----------------------------------------------------------------------------------------------

    @app.get("/image/{image_id}")
    def image(request: Request, image_id: str) -> Response:
        record = store.image(checked_id(image_id))
        if record is None:
            raise ImageUnavailable(404, f"This store has no image with id {image_id}.")
        return render(request, "detail.html", {"record": record}, record.to_dict())

    @app.get("/image/{image_id}/describe")
    def describe(request: Request, image_id: str, top: int = Query(5, ge=1, le=50)) -> Response:
        stored = state.images.read(image_id)
        with state.queries:
            description = store.describe(stored.data, top=top, max_megapixels=options.max_megapixels)
        return render(request, "describe.html", {"description": description}, description.to_dict())

    @app.get("/image/{image_id}/thumb")
    def thumb(image_id: str) -> Response:
        return _jpeg(state.images.rendition(image_id, "thumb"))

    @app.get("/image/{image_id}/preview")
    def preview(image_id: str) -> Response:
        return _jpeg(state.images.rendition(image_id, "preview"))

    @app.get("/image/{image_id}/file")
    def original(image_id: str) -> Response:
        stored = state.images.read(image_id)
        name = re.sub(r'[^\x20-\x7e]|["\\]', "_", os.path.basename(stored.path))  # a header-safe file name
        headers = {"Content-Disposition": f'inline; filename="{name}"', "Cache-Control": "private, max-age=3600"}
        return Response(stored.data, media_type=stored.media_type, headers=headers)

    # --- the store, and ingest ----------------------------------------------------------------------------------

    @app.get("/info")
    def info(request: Request) -> Response:
        summary = store.info()
        heads = store.heads()
        data = {**summary.to_dict(), "heads": [head.to_dict() for head in heads], "allow_ingest": options.allow_ingest, "roots": list(options.roots)}
        return render(request, "info.html", {"info": summary, "heads": heads, "options": options}, data)

    @app.post("/ingest")
    def ingest(request: Request, folder: str = Form(...)) -> Response:
        job = state.jobs.start(folder)
        return render(request, "ingest_job.html", {"job": job}, job.to_dict(), status=202)

    @app.get("/ingest/{job_id}")
    def ingest_job(request: Request, job_id: str) -> Response:
        job = state.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"No ingest {job_id} on this server.")
        headers = {"HX-Trigger": "ingested"} if job.finished else None
        return render(request, "ingest_job.html", {"job": job}, job.to_dict(), headers=headers)

    def refusal(status: int, text: str, as_json: bool) -> tuple[str, bytes]:
        if as_json:
            return "application/json", json.dumps({"error": text, "status": status}).encode()
        body = templates.get_template("message.html").render(message=text, kind="error")
        return "text/html; charset=utf-8", body.encode()

    allowed = frozenset(LOOPBACK_NAMES) | frozenset({options.host.lower()}) if options.loopback else None
    app.add_middleware(Guard, allowed_hosts=allowed, max_body=options.max_upload_bytes, render=refusal)
    return app


@dataclass(frozen=True)
class SearchResults:
    """What a search shows: the hits (best first), the query as understood, and a message instead of hits when
    there is nothing to search (an empty store, an empty query, nothing under the prefix)."""

    hits: "tuple[SearchHit, ...]"
    query: dict[str, Any]
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"hits": [hit.to_dict() for hit in self.hits], "query": self.query, "message": self.message}


def search_results(
    state: ServerState, q: str, negative: str, k: int, prefix: str, like: str, upload: str, weights: dict[str, float]
) -> SearchResults:
    """Run the page's search: the text and its negatives, the query image (a stored one or an upload)."""
    store = state.store
    text, negatives = parse_query(q)
    negatives += [part.strip() for part in negative.split(",") if part.strip()]
    query = {"text": text or None, "negative": negatives, "like": like or None, "upload": upload or None, "k": k, "prefix": prefix or None, "weights": weights}
    if like and upload:
        raise InvalidOptionError("Search with one image at a time: a stored image (like) or an upload, not both.")
    image = None
    if like:
        image = store.image_embedding(checked_id(like))
        if image is None:
            raise ImageUnavailable(404, f"This store has no image with id {like}.")
    elif upload:
        held = state.uploads.get(upload)
        if held is None:
            raise ImageUnavailable(410, "That uploaded image is no longer held by the server: upload it again.")
        image = held.vector
    if store.count_images() == 0:
        return SearchResults((), query, f"This store holds no images yet. Ingest a folder: clipstore ingest FOLDER --store {store.path}")
    if not text and image is None:
        return SearchResults((), query, "Type what you are looking for, or drop an image here.")
    with state.queries:
        hits = store.search(text or None, image, negative=negatives, weights=weights, k=k, path_prefix=prefix or None)
    if not hits:
        return SearchResults((), query, f"No image is stored under {prefix}." if prefix else "No images match.")
    return SearchResults(tuple(hits), query)


def _number(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidOptionError(f"{name} must be a number, not {value!r}.") from None


def wants_json(request: Request) -> bool:
    """True when the client asks for JSON (Accept: application/json) rather than the page's HTML."""
    return "application/json" in request.headers.get("accept", "")


def _jpeg(data: bytes) -> Response:
    # A rendition's URL names the content (its id is the SHA-256 of the bytes): it never changes.
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=31536000, immutable"})
