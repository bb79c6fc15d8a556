"""The toxicity task's histogram: rendered in a private scratch folder, stored atomically."""

from pathlib import Path

import polars as pl
from prefect import flow

from tasks.corpus.steps import toxicity_step
from tasks.io import write_dataset
from tasks.judges.toxicity import ToxicityConfig


def _documents(n: int, data_dir: Path):
    texts = [
        f"document {i}: " + "you are a stupid idiot\n" * (i % 3) + "a calm line" for i in range(n)
    ]
    df = pl.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(n)],
            "source": ["web"] * n,
            "domain": ["web"] * n,
            "url": [None] * n,
            "title": [None] * n,
            "text": texts,
            "factual": [False] * n,
            "license": ["test"] * n,
            "location": [f"f:{i}" for i in range(n)],
            "sample_weight": [1.0] * n,
        },
        schema_overrides={"url": pl.String, "title": pl.String},
    )
    return write_dataset(df, "documents", data_dir)


def test_concurrent_toxicity_tasks_share_no_scratch_file(tmp_path):
    run_dir = tmp_path / "run"
    corpus_artifacts = run_dir / "artifacts" / "corpus"
    corpus_artifacts.mkdir(parents=True)
    # Another run's scratch file under the name the task used to write to: must stay untouched.
    other = corpus_artifacts / ".tmp_hist.png"
    other.write_bytes(b"another run's half-written PNG")
    docs = [_documents(n, tmp_path / f"data{n}") for n in (5, 6, 7, 8)]
    cfg = ToxicityConfig(sample_frac=1.0)

    @flow
    def four_at_once():
        futures = [toxicity_step.submit(d, cfg, str(tmp_path / "data"), str(run_dir)) for d in docs]
        return [f.result() for f in futures]

    outputs = four_at_once()
    hists = {Path(o.files["toxicity_histogram.png"]) for o in outputs}
    assert len(hists) == 4  # four different histograms, each under its own content hash
    for path in hists:
        assert (
            path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
            and path.parent.parent == corpus_artifacts
        )
    assert other.read_bytes() == b"another run's half-written PNG"
    leftovers = [p.name for p in corpus_artifacts.rglob(".*") if p != other]
    assert leftovers == []
