"""Throughput of the corpus filters on a Parquet of documents, in the pipeline's order.

    python benchmarks/corpus_throughput.py [--documents PATH] [--repeat N]

Runs exact dedup, near dedup, PII and quality one after the other (each on the previous step's
kept rows) and prints, per step: docs in, docs out, MB of text in, seconds, MB/s and docs/s,
plus a TOTAL row for the whole chain. The default input is the newest
runs/demo/data/raw_documents/*.parquet written by `make demo`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("POLARS_MAX_THREADS", "2")  # the 2-core target machine; before importing polars

import polars as pl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tasks.corpus.base import TEXT  # noqa: E402
from tasks.corpus.dedup import DedupConfig, exact_dedup, near_dedup  # noqa: E402
from tasks.corpus.pii import PiiConfig, pii_filter  # noqa: E402
from tasks.corpus.quality import QualityConfig, quality_filter  # noqa: E402

DEFAULT_GLOB = "runs/demo/data/raw_documents/*.parquet"


def default_documents() -> Path:
    root = Path(__file__).resolve().parents[1]
    found = sorted(root.glob(DEFAULT_GLOB), key=lambda p: p.stat().st_mtime)
    if not found:
        sys.exit(f"no documents found at {root / DEFAULT_GLOB}: run `make demo` first, or pass --documents PATH")
    return found[-1]


def run_chain(docs: pl.DataFrame) -> list[tuple[str, int, int, float, float]]:
    """(step, docs in, docs out, MB in, seconds) for each step, each fed the previous kept rows."""
    dedup = DedupConfig()
    steps = [
        ("exact dedup", lambda d: exact_dedup(d, dedup)),
        ("near dedup", lambda d: near_dedup(d, dedup)),
        ("pii", lambda d: pii_filter(d, PiiConfig())),
        ("quality", lambda d: quality_filter(d, QualityConfig())),
    ]
    rows = []
    for name, step in steps:
        mb_in = docs[TEXT].str.len_bytes().sum() / 1e6
        start = time.perf_counter()
        result = step(docs)
        seconds = time.perf_counter() - start
        rows.append((name, docs.height, result.kept.height, mb_in, seconds))
        docs = result.kept
    return rows


def print_table(rows: list[tuple[str, int, int, float, float]]) -> None:
    total = ("TOTAL", rows[0][1], rows[-1][2], rows[0][3], sum(r[4] for r in rows))
    print(f"{'step':<12} {'docs in':>9} {'docs out':>9} {'MB in':>8} {'seconds':>8} {'MB/s':>7} {'docs/s':>9}")
    for name, n_in, n_out, mb, sec in [*rows, total]:
        print(f"{name:<12} {n_in:>9,} {n_out:>9,} {mb:>8.1f} {sec:>8.2f} {mb / sec:>7.1f} {n_in / sec:>9,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=Path, help=f"Parquet of documents (default: newest {DEFAULT_GLOB})")
    parser.add_argument("--repeat", type=int, default=1, help="run the chain N times, report the fastest per step")
    args = parser.parse_args()
    path = args.documents or default_documents()
    if not path.exists():
        sys.exit(f"--documents {path} does not exist")
    docs = pl.read_parquet(path)
    print(f"{path}: {docs.height:,} documents, {docs[TEXT].str.len_bytes().sum() / 1e6:.1f} MB of text, "
          f"POLARS_MAX_THREADS={os.environ['POLARS_MAX_THREADS']}")
    runs = [run_chain(docs) for _ in range(max(args.repeat, 1))]
    print_table([min(step, key=lambda r: r[4]) for step in zip(*runs)])


if __name__ == "__main__":
    main()
