"""`clipstore demo`: render a sample folder, ingest it with clipstore-mini, and run a few searches — offline."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from .results import IngestReport, SearchHit, _AsDict
from .world.samples import WorldManifest, read_manifest, render_folder

DEMO_QUERIES = (
    "a large red circle in the center on a plain white background",
    "three small blue squares scattered around on a striped grey backdrop",
    "the outline of a big yellow star on a black background",
    "a sketch of a green triangle on a beige background",
)


@dataclass(frozen=True)
class DemoSearch(_AsDict):
    """One demo query (a text, or the path of a query image) and its hits with the prompts they were drawn from."""

    query: str
    kind: str
    hits: tuple[SearchHit, ...]
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class DemoResult(_AsDict):
    folder: str
    store: str
    rendered: int
    report: IngestReport
    searches: tuple[DemoSearch, ...] = field(default_factory=tuple)


def run_demo(out: str | os.PathLike[str], *, n: int = 300, seed: int = 0, k: int = 3, model: str = "clipstore-mini") -> DemoResult:
    """Render `n` render-world images under `out/images`, ingest them into `out/demo.clipstore`, and search.

    Returns the ingest report and, for each demo text query and two image queries, the top-k hits with the
    prompt each hit image was rendered from (so the reader can judge the results).
    """
    from .store import connect

    root = Path(out).expanduser().resolve()
    manifest: WorldManifest = render_folder(root / "images", n, seed=seed)
    store = connect(root / "demo.clipstore", model=model)
    report = store.ingest(manifest.folder)
    records = read_manifest(manifest.manifest)
    prompt_of = {record["path"]: record["prompt"] for record in records}

    def explained(query: str, kind: str, hits: list[SearchHit]) -> DemoSearch:
        return DemoSearch(query, kind, tuple(hits), tuple(prompt_of.get(hit.path, "") for hit in hits))

    searches = [explained(text, "text", store.search_text(text, k=k)) for text in DEMO_QUERIES]
    for record in records[:2]:
        searches.append(explained(record["path"], "image", store.search_image(record["path"], k=k)))
    return DemoResult(manifest.folder, store.path, manifest.count, report, tuple(searches))


def demo_summary(result: DemoResult) -> list[str]:
    """Human-readable lines describing a demo run."""
    lines = [
        f"rendered {result.rendered} images under {result.folder}",
        f"ingested into {result.store}: added {result.report.added}, failed {len(result.report.failed)}",
    ]
    for search in result.searches:
        label = f'text "{search.query}"' if search.kind == "text" else f"image {search.query}"
        lines.append("")
        lines.append(label)
        for hit, prompt in zip(search.hits, search.prompts):
            lines.append(f"  {hit.score:.3f}  {os.path.relpath(hit.path, result.folder)}  <- {prompt}")
    return lines
