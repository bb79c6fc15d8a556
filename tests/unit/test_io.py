import os

import polars as pl
import pytest

from data_contracts import ContractError
from tasks.io import DatasetMissingError, read_dataset, write_dataset


def _scores(n=3, score=0.1):
    return pl.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(n)],
            "source": ["news"] * n,
            "n_lines": [2] * n,
            "score": [score] * n,
            "toxic": [False] * n,
        }
    )


def test_write_is_content_addressed_and_idempotent(tmp_path):
    a = write_dataset(_scores(), "toxicity_scores", tmp_path)
    b = write_dataset(_scores(), "toxicity_scores", tmp_path)
    c = write_dataset(_scores(score=0.2), "toxicity_scores", tmp_path)
    assert a == b
    assert a.uri != c.uri and a.sha256 != c.sha256
    assert a.sha256[:16] in a.path.name
    assert a.rows == 3 and a.contract == "toxicity_scores" and a.version == "1.0"
    files = sorted(p.name for p in (tmp_path / "toxicity_scores").iterdir())
    assert len(files) == 2 and not any(f.startswith(".tmp") for f in files)


def test_round_trip_validates_on_read(tmp_path):
    m = write_dataset(_scores(), "toxicity_scores", tmp_path)
    assert read_dataset(m, verify_hash=True).equals(_scores())
    # a file changed behind the manifest's back fails the read
    pl.DataFrame({"doc_id": ["x"]}).write_parquet(m.path)
    with pytest.raises(ValueError):
        read_dataset(m)


def test_invalid_frame_is_never_written(tmp_path):
    with pytest.raises(ContractError, match="score"):
        write_dataset(_scores(score=1.5), "toxicity_scores", tmp_path)
    assert not (tmp_path / "toxicity_scores").exists()


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(_scores(), "toxicity_scores", tmp_path)
    assert list((tmp_path / "toxicity_scores").iterdir()) == []


def test_missing_file_names_the_dataset_and_the_fix(tmp_path):
    m = write_dataset(_scores(), "toxicity_scores", tmp_path)
    m.path.unlink()
    with pytest.raises(DatasetMissingError, match="--rerun"):
        read_dataset(m)
