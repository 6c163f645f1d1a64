"""`clipstore demo`: render a sample folder, ingest it with clipstore-mini, and run a few searches — offline."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from clipstore.results import IngestReport, SearchHit, _AsDict
from clipstore.world.samples import WorldManifest, read_manifest, render_folder

TEXT_QUERIES = 4


@dataclass(frozen=True)
class DemoSearch(_AsDict):
    """One demo query (a text, or the path of a query image) and its hits with the prompts they were drawn from.

    `target` is the image a text query was written for (a new paraphrase of that image's scene, not its own
    prompt): a good model ranks it first.
    """

    query: str
    kind: str
    hits: tuple[SearchHit, ...]
    prompts: tuple[str, ...]
    target: str | None = None


@dataclass(frozen=True)
class DemoResult(_AsDict):
    folder: str
    store: str
    rendered: int
    report: IngestReport
    searches: tuple[DemoSearch, ...] = field(default_factory=tuple)


def run_demo(out: str | os.PathLike[str], *, n: int = 300, seed: int = 0, k: int = 3, model: str = "clipstore-mini") -> DemoResult:
    """Render `n` render-world images under `out/images`, ingest them into `out/demo.clipstore`, and search.

    Text queries are fresh paraphrases of a few rendered scenes (so the image each was written for should
    come first); image queries are rendered images themselves. Each hit comes with the prompt its image was
    rendered from, so the reader can judge the results.
    """
    import random

    from clipstore.store.facade import connect
    from clipstore.world.grammar import Scene, describe

    root = Path(out).expanduser().resolve()
    manifest: WorldManifest = render_folder(root / "images", n, seed=seed)
    store = connect(root / "demo.clipstore", model=model)
    report = store.ingest(manifest.folder)
    records = read_manifest(manifest.manifest)
    prompt_of = {record["path"]: record["prompt"] for record in records}

    def explained(query: str, kind: str, hits: list[SearchHit], target: str | None = None) -> DemoSearch:
        return DemoSearch(query, kind, tuple(hits), tuple(prompt_of.get(hit.path, "") for hit in hits), target)

    rng = random.Random(seed)
    searches = []
    for record in rng.sample(records, min(TEXT_QUERIES, len(records))):
        scene = Scene(**{name: record["labels"][name] for name in Scene.__dataclass_fields__})
        text = describe(scene, rng)
        searches.append(explained(text, "text", store.search_text(text, k=k), record["path"]))
    for record in records[:2]:
        searches.append(explained(record["path"], "image", store.search_image(record["path"], k=k)))
    return DemoResult(manifest.folder, store.path, manifest.count, report, tuple(searches))


def demo_summary(result: DemoResult) -> list[str]:
    """Human-readable lines describing a demo run."""
    report = result.report
    lines = [
        f"rendered {result.rendered} images under {result.folder}",
        f"ingested into {result.store}: added {report.added}, unchanged {report.skipped_unchanged}"
        f" (already in the store from an earlier demo), failed {len(report.failed)}"
        if report.skipped_unchanged
        else f"ingested into {result.store}: added {report.added}, failed {len(report.failed)}",
    ]
    for search in result.searches:
        label = f'text "{search.query}"' if search.kind == "text" else f"image {search.query}"
        lines.append("")
        lines.append(label)
        if search.target:
            found = [hit.path for hit in search.hits].index(search.target) + 1 if search.target in [h.path for h in search.hits] else None
            where = f"ranked {found}" if found else f"not in the top {len(search.hits)}"
            lines.append(f"  (written for {os.path.relpath(search.target, result.folder)}: {where})")
        for hit, prompt in zip(search.hits, search.prompts):
            lines.append(f"  {hit.score:.3f}  {os.path.relpath(hit.path, result.folder)}  <- {prompt}")
    store = shlex.quote(result.store)
    example_image = shlex.quote(next((s.query for s in result.searches if s.kind == "image"), os.path.join(result.folder, "IMAGE")))
    lines += [
        "",
        "Try your own queries on the demo store (clipstore-mini knows only render-world scenes: shapes, colours, backgrounds):",
        f'  clipstore search "two small red circles on a white background" --store {store}',
        f"  clipstore similar {example_image} --store {store}",
        f"  clipstore info --store {store}",
    ]
    return lines
