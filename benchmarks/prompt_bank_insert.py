"""Prompt-bank insert at scale: N generated prompts into an empty bank and into a bank of N, through the
store's real insert path (dedup gate, CLIP text embeddings of the kept prompts, LanceDB writes).

MiniLM embeddings of the generated prompts are computed once and cached under --cache (they cost ~2 ms a
prompt on 2 CPU cores and are not what this measures); CLIP text embeddings (clipstore-mini) are computed
in the timed insert. The agreement with the exact reference (seed 001 eq. 7, one prompt at a time) is
measured on a random sample of the inserted prompts: the sample's decisions are recomputed exactly against
everything before it.

The bank of N for the second insert is the first insert's kept prompts topped up with "long-tail" prompts
(the same prompt template around rarer words drawn from MiniLM's vocabulary; about 98% of them pass
the gate). The generated corpus alone cannot fill it: its near-duplicate share grows with its size (30% of the
last 100,000 of a 1M corpus are kept), so a bank of 1M would take ~3M more generated prompts to embed.

Each timed insert runs in a fresh process (started through `search_scale.run_child`'s small launcher), so its
peak RSS (getrusage) is the insert's own: the process imports clipstore, loads the models and the new prompts'
cached MiniLM vectors, and inserts; the bank it reads, the dedup and the index update all count. This process
(corpora, the bank top-up, the agreement check) is not measured. "index s" is the part of the insert spent
building or updating the bank's vector indexes (included in "seconds").

After the last insert, the recall of the bank's indexed neighbour searches (Model B's CLIP neighbours, `prompts
search`'s MiniLM neighbours) against an exact scan is measured on the bank's real embeddings (untimed).

    python benchmarks/prompt_bank_insert.py [--n 1000000] [--cache ~/.cache/clipstore-bench] [--empty-only]
                                            [--recall-queries 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from search_scale import cpu_name, run_child  # noqa: E402


_CHUNK = 50_000


def embeddings(texts: list[str], cache: Path, name: str, first_chunk: int = 0) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings of `texts`, cached in chunks of 50,000 (an interrupted precompute resumes).

    `texts` is the whole corpus; only its chunks from `first_chunk` on are returned. A partial last chunk is
    fine only at the corpus's end (the cache is keyed by chunk number). Computed with a bf16 copy of the model
    on CPUs with native bf16 (about 2x faster; cosine >= 0.999 to fp32), which changes nothing this
    benchmark measures.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    from clipstore.encoders.clip import cpu_supports_bf16
    from clipstore.encoders.minilm import minilm_location

    cache.mkdir(parents=True, exist_ok=True)
    model = None
    first = first_chunk * _CHUNK
    out = np.empty((max(len(texts) - first, 0), 384), np.float32)  # filled chunk by chunk: no second copy
    for start in range(first, len(texts), _CHUNK):
        path = cache / f"{name}-{start // _CHUNK:04d}.npy"
        if not path.exists():
            if model is None:
                model = SentenceTransformer(minilm_location(), device="cpu")
                if cpu_supports_bf16():
                    model = model.to(torch.bfloat16)
            vectors = model.encode(
                texts[start : start + _CHUNK], batch_size=256, normalize_embeddings=True, convert_to_tensor=True
            ).float().numpy()
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            np.save(path.with_suffix(".tmp.npy"), vectors.astype(np.float32))
            path.with_suffix(".tmp.npy").rename(path)  # a chunk is either whole or absent
        chunk = np.load(path, mmap_mode="r")
        out[start - first : start - first + len(chunk)] = chunk
    return out


def sample_agreement(all_vectors: np.ndarray, m: int, accepted: np.ndarray, sample: int, seed: int = 0) -> float:
    """Fraction of sampled new items whose decision matches the exact rule given the decisions before it.

    all_vectors = bank (m rows) then the new items; accepted = the insert's decisions for the new items.
    The sample is scored against all kept items in one blocked pass (each sampled item only sees the kept
    items before it).
    """
    from clipstore.prompts.dedup import DEFAULT_THRESHOLD

    rng = np.random.default_rng(seed)
    n = len(accepted)
    picks = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    queries = all_vectors[m + picks].T
    kept_positions = np.flatnonzero(np.concatenate([np.ones(m, bool), accepted]))
    best = np.full(len(picks), -np.inf, np.float32)
    for start in range(0, len(kept_positions), 4_096):
        positions = kept_positions[start : start + 4_096]
        scores = all_vectors[positions] @ queries
        scores[positions[:, None] >= (m + picks)[None, :]] = -np.inf  # only items before the sampled one
        best = np.maximum(best, scores.max(axis=0))
    exact_reject = best >= DEFAULT_THRESHOLD
    return float(np.mean(exact_reject == ~accepted[picks]))


def main() -> None:
    import clipstore
    from clipstore.prompts.bank import load_bank
    from clipstore.world.corpus import prompt_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/clipstore-bench").expanduser())
    parser.add_argument("--sample", type=int, default=10_000)
    parser.add_argument("--empty-only", action="store_true", help="Only the insert into an empty bank.")
    parser.add_argument("--recall-queries", type=int, default=100, help="after the inserts: queries of the bank's recall check (0: none)")
    parser.add_argument("--insert", type=Path, help=argparse.SUPPRESS)  # the measured child: its result file
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.insert is not None:
        return insert(args.store, prompt_corpus(args.n, seed=args.seed), args.cache, f"corpus-{args.seed}-{args.n}", args.insert)

    seeds = [1] if args.empty_only else [1, 2]
    filler = long_tail_corpus(args.n, seed=3) if not args.empty_only else []  # tops the bank up to N between inserts
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store_path = Path(tmp) / "bench.clipstore"
        store = clipstore.connect(store_path, model="clipstore-mini")
        for seed in seeds:
            texts = prompt_corpus(args.n, seed=seed)
            vectors = embeddings(texts, args.cache, f"corpus-{seed}-{args.n}")  # computed here, once, when not cached
            if rows:
                fill_bank(store, filler, args.n, args.cache)
            bank_size = store.count_prompts()
            bank = load_bank(store.db)[2] if bank_size else np.zeros((0, 384), np.float32)
            result = Path(tmp) / "insert.json"
            command = [sys.executable, __file__, "--insert", str(result), "--store", str(store_path), "--seed", str(seed),
                       "--n", str(args.n), "--cache", str(args.cache)]
            _, rss = run_child(command, Path(__file__).parent.parent)
            measured = json.loads(result.read_text())
            accepted = np.load(result.with_suffix(".npy"))
            agreement = sample_agreement(np.concatenate([bank, vectors]), len(bank), accepted, args.sample)
            label = "empty bank" if not bank_size else f"bank of {args.n:,}"
            rows.append((label, bank_size, int(accepted.sum()), int((~accepted).sum()), measured["seconds"],
                         measured["index_seconds"], len(texts) / measured["seconds"], rss, agreement))
            del bank, vectors
        recall = bank_recall(store, Path(tmp), args.recall_queries) if args.recall_queries and rows else None

    print(f"{args.n:,} generated prompts per insert, clipstore-mini CLIP text embeddings; {cpu_name()}\n")
    print("| insert into | bank before | kept | rejected | seconds | index s | prompts/s | peak RSS (MiB) | agreement (sample) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, bank_size, kept, rejected, seconds, index_seconds, rate, rss, agreement in rows:
        print(f"| {label} | {bank_size:,} | {kept:,} | {rejected:,} | {seconds:.0f} | {index_seconds:.0f} | {rate:,.0f} | "
              f"{rss:,.0f} | {agreement:.4f} |")
    if recall:
        print(f"\nThe bank's neighbour searches after the last insert ({recall['rows']:,} prompts, real embeddings), "
              "recall against an exact scan:\n")
        print("| search | queries | recall |")
        print("| --- | ---: | ---: |")
        for name, queries, value in recall["searches"]:
            print(f"| {name} | {queries} | {value:.3f} |")


def bank_recall(store, workdir: Path, n: int) -> dict:
    """Recall of the bank's indexed neighbour searches against an exact LanceDB scan, on the bank's real
    embeddings: Model B's neighbours (CLIP column, k of the describer) for rendered held-out images and for
    held-out prompts' CLIP text embeddings, and `prompts search` (MiniLM column, k=10) for held-out prompts."""
    from describe_scale import exact_ids

    from clipstore.db import tables
    from clipstore.describe.model_b import bank_neighbours
    from clipstore.imaging import load_image
    from clipstore.prompts.nearest import CLIP_COLUMN, MINILM_COLUMN
    from clipstore.world import render_folder
    from clipstore.world.corpus import prompt_corpus

    table = tables.open_prompts(store.db)
    k = store.describer().knn.k
    render_folder(workdir / "queries", n, seed=29, split="heldout")
    paths = sorted(str(path) for path in (workdir / "queries").rglob("*.png"))[:n]
    images = [store.encoder.encode_images([load_image(path).image])[0] for path in paths]
    texts = prompt_corpus(n, seed=31)  # a seed no insert used
    clip_texts = store.encoder.encode_texts(texts)

    def neighbour_recall(queries) -> float:
        return float(np.mean([len(set(bank_neighbours(store.db, q, k).ids) & exact_ids(table, CLIP_COLUMN, q, k)) / k for q in queries]))

    minilm = store.minilm.encode(texts)
    hits = [store.search_prompts(text, k=10) for text in texts]
    search = float(np.mean([len({h.id for h in found} & exact_ids(table, MINILM_COLUMN, q, 10)) / 10 for found, q in zip(hits, minilm)]))
    return {
        "rows": table.count_rows(),
        "searches": [
            (f"Model B neighbours (CLIP, k={k}), rendered held-out images", len(images), neighbour_recall(images)),
            (f"Model B neighbours (CLIP, k={k}), held-out prompts' text embeddings", len(texts), neighbour_recall(clip_texts)),
            ("prompts search (MiniLM, k=10), held-out prompts", len(texts), search),
        ],
    }


def insert(store_path: Path, texts: list[str], cache: Path, name: str, result: Path) -> None:
    """The measured child: insert `texts` (their cached MiniLM vectors) into the store through its real path;
    writes {"seconds", "index_seconds"} to `result` and the accepted mask to `result`.npy."""
    import clipstore
    from clipstore.prompts import bank as bank_module

    vectors = embeddings(texts, cache, name)
    store = clipstore.connect(store_path)
    store.encoder.encode_texts(["warm-up"])
    index_seconds = 0.0
    update = bank_module.update_bank_index

    def timed_update(*args, **kwargs):
        nonlocal index_seconds
        began = time.perf_counter()
        try:
            return update(*args, **kwargs)
        finally:
            index_seconds += time.perf_counter() - began

    bank_module.update_bank_index = timed_update
    start = time.perf_counter()
    with store_lock(store):
        report = store._prompt_bank.add(texts, "bench", minilm_embeddings=vectors)
    seconds = time.perf_counter() - start
    accepted = np.ones(len(texts), bool)
    accepted[[d.index for d in report.duplicates]] = False
    np.save(result.with_suffix(".npy"), accepted)
    result.write_text(json.dumps({"seconds": seconds, "index_seconds": index_seconds}))


def long_tail_corpus(n: int, seed: int) -> list[str]:
    """n prompts in the corpus's template whose subject names rarer words (from MiniLM's vocabulary)."""
    import random
    import re

    from transformers import AutoTokenizer

    from clipstore.encoders.minilm import minilm_location
    from clipstore.world import corpus

    vocabulary = sorted(AutoTokenizer.from_pretrained(minilm_location()).get_vocab())
    words = [word for word in vocabulary if re.fullmatch(r"[a-z]{4,}", word)]
    rng = random.Random(f"clipstore-long-tail:{seed}")
    prompts = []
    for _ in range(n):
        first, second, third = rng.sample(words, 3)
        subject = f"{rng.choice(('a', 'the', 'an old', 'one'))} {first} {second} {rng.choice(corpus._OBJECTS)}"
        details = rng.sample(corpus._DETAILS, rng.randint(1, 2))
        prompts.append(", ".join([
            f"{subject} {rng.choice(corpus._SETTINGS)} with {third}", rng.choice(corpus._STYLES),
            rng.choice(corpus._LIGHTING), *details,
        ]))
    return prompts


def fill_bank(store, filler: list[str], target: int, cache: Path) -> None:
    """Insert filler prompts (through the gate, untimed) until the bank holds `target` prompts."""
    used = 0
    while (missing := target - store.count_prompts()) > 0 and used < len(filler):
        take = min(len(filler) - used, missing + missing // 50 + 1)  # ~98% of them pass; the loop tops up the rest
        end = min(len(filler), -(-(used + take) // _CHUNK) * _CHUNK)  # the cache holds whole chunks
        vectors = embeddings(filler[:end], cache, f"long-tail-3-{len(filler)}", first_chunk=used // _CHUNK)
        vectors = vectors[used % _CHUNK :][:take]
        with store_lock(store):
            store._prompt_bank.add(filler[used : used + take], "filler", minilm_embeddings=vectors)
        used += take


def store_lock(store):
    from clipstore.db.locking import write_lock

    return write_lock(store.path)


if __name__ == "__main__":
    main()
