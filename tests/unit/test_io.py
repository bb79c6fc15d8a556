import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from data_contracts import ContractError
from tasks.io import (
    DatasetMissingError,
    atomic_write_bytes,
    read_dataset,
    remove_stale_partials,
    write_dataset,
)


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
    assert len(files) == 2 and not any(f.startswith(".") for f in files)


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


# A child process that is SIGKILLed in the middle of write_dataset: after the Parquet bytes are
# written and fsynced, before the rename (the fault injected on purpose is the kill itself).
_KILLED_WRITE = """
import os, signal, sys
import polars as pl
import tasks.io
os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
df = pl.DataFrame({"doc_id": ["k"], "source": ["news"], "n_lines": [1], "score": [0.3],
                   "toxic": [False]})
tasks.io.write_dataset(df, "toxicity_scores", sys.argv[1])
"""


def _age(path, seconds=3600):
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_killed_write_leaves_no_file_a_parquet_glob_reads_and_the_next_write_removes_it(tmp_path):
    good = write_dataset(_scores(), "toxicity_scores", tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITE, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    folder = tmp_path / "toxicity_scores"
    (left,) = [p for p in folder.iterdir() if p != good.path]
    assert left.name.startswith(".toxicity_scores.") and left.name.endswith(".partial")
    # the leftover is invisible to a reader that globs the dataset folder
    assert pl.scan_parquet(folder / "*.parquet").collect().equals(_scores())

    # a young leftover is kept (its writer may only just have created it) ...
    write_dataset(_scores(n=1), "toxicity_scores", tmp_path)
    assert left.exists()
    # ... an old one whose writer is gone is removed by the next write, as is the old name
    legacy = folder / ".tmp-abc123.parquet"
    legacy.write_bytes(b"half a parquet file")
    _age(left), _age(legacy)
    write_dataset(_scores(n=2), "toxicity_scores", tmp_path)
    assert not left.exists() and not legacy.exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_write_in_progress_is_never_removed(tmp_path):
    folder = tmp_path / "toxicity_scores"
    folder.mkdir()
    busy = folder / ".toxicity_scores.live.partial"
    with open(busy, "wb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # what a writer in another process holds
        _age(busy)
        assert remove_stale_partials(folder) == []
        write_dataset(_scores(), "toxicity_scores", tmp_path)
        assert busy.exists()
    assert remove_stale_partials(folder) == [busy]  # its writer let go without renaming


def test_artifact_writes_use_partial_names_and_clean_up_their_own(tmp_path):
    stale = tmp_path / ".hist.png.x1y2.partial"
    other = tmp_path / ".other.bin.x1y2.partial"
    for p in (stale, other):
        p.write_bytes(b"x")
        _age(p)
    atomic_write_bytes(tmp_path / "hist.png", b"png")
    assert (tmp_path / "hist.png").read_bytes() == b"png"
    assert not stale.exists() and other.exists()  # only leftovers of the same artifact name
