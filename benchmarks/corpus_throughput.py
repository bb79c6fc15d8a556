"""Throughput of the corpus filters on a Parquet of documents, in the pipeline's order.

    python benchmarks/corpus_throughput.py [--documents PATH] [--repeat N]

Runs PII, quality, exact dedup and near dedup one after the other, in the corpus flow's order
(flows/dag.py), each on the previous step's kept rows, and prints per step: docs in, docs out,
MB of text in, seconds, MB/s and docs/s, plus a TOTAL row for the whole chain (MB/s of TOTAL
is the input's MB over the chain's seconds). The default input is the demo corpus that
`make demo` ingested (the raw_documents manifest of runs/last_run.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("POLARS_MAX_THREADS", "2")  # the 2-core target; set before importing polars

import polars as pl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout, uninstalled

from tasks.corpus.base import TEXT  # noqa: E402
from tasks.corpus.dedup import DedupConfig, exact_dedup, near_dedup  # noqa: E402
from tasks.corpus.pii import PiiConfig, pii_filter  # noqa: E402
from tasks.corpus.quality import QualityConfig, quality_filter  # noqa: E402
from tasks.io import Manifest  # noqa: E402

DEFAULT_SUMMARY = "runs/last_run.json"


def default_documents() -> Path:
    """raw_documents of the last pipeline run, which must have been on the demo preset."""
    summary = Path(__file__).resolve().parents[1] / DEFAULT_SUMMARY
    try:
        run = json.loads(summary.read_text())
        if run["preset"] != "demo":
            raise ValueError(f"the last run used preset {run['preset']!r}")
        return Manifest.model_validate(run["stages"]["corpus"]["outputs"]["raw_documents"]).path
    except (OSError, KeyError, ValueError) as exc:
        sys.exit(
            f"no demo corpus found via {summary} ({exc}): run `make demo` first, "
            "or pass --documents PATH"
        )


def run_chain(docs: pl.DataFrame) -> list[tuple[str, int, int, float, float]]:
    """(step, docs in, docs out, MB in, seconds) for each step, each fed the previous kept rows."""
    dedup = DedupConfig()
    steps = [  # the corpus flow's order (flows/dag.py)
        ("pii", lambda d: pii_filter(d, PiiConfig())),
        ("quality", lambda d: quality_filter(d, QualityConfig())),
        ("exact dedup", lambda d: exact_dedup(d, dedup)),
        ("near dedup", lambda d: near_dedup(d, dedup)),
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
    header = ("step", "docs in", "docs out", "MB in", "seconds", "MB/s", "docs/s")
    print("{:<12} {:>9} {:>9} {:>8} {:>8} {:>7} {:>9}".format(*header))
    for name, n_in, n_out, mb, sec in [*rows, total]:
        print(
            f"{name:<12} {n_in:>9,} {n_out:>9,} {mb:>8.1f} {sec:>8.2f} {mb / sec:>7.1f} "
            f"{n_in / sec:>9,.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--documents",
        type=Path,
        help="Parquet of documents (default: the demo corpus of runs/last_run.json)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the chain N times and report the fastest run of each step",
    )
    args = parser.parse_args()
    path = args.documents or default_documents()
    if not path.exists():
        sys.exit(f"--documents {path} does not exist")
    docs = pl.read_parquet(path)
    print(
        f"{path}: {docs.height:,} documents, "
        f"{docs[TEXT].str.len_bytes().sum() / 1e6:.1f} MB of text, "
        f"POLARS_MAX_THREADS={os.environ['POLARS_MAX_THREADS']}"
    )
    runs = [run_chain(docs) for _ in range(max(args.repeat, 1))]
    print_table([min(step, key=lambda r: r[4]) for step in zip(*runs)])


if __name__ == "__main__":
    main()
