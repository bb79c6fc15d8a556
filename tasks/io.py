"""Contract-checked, atomic, content-addressed Parquet I/O.

Tasks pass `Manifest`s (uri, rows, contract, version, sha256), never DataFrames. A dataset
file is named by the hash of its bytes, so a changed upstream file changes every downstream
task input, and Prefect's input-hash cache invalidates exactly what it should.
"""

from __future__ import annotations

import fcntl
import glob
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from data_contracts import get_contract
from tasks.hashing import sha256_of

HASH_CHARS = 16  # of the sha256 in a file name; the manifest keeps all 64
# A write in progress is `.<name>.<random>.partial`: hidden, and no `*.parquet` glob (polars,
# pyarrow, DuckDB) picks it up. `.tmp-*.parquet` is the name older versions used.
PARTIAL_SUFFIX = ".partial"
_LEGACY_PARTIAL = ".tmp-*.parquet"
# A partial file younger than this is never removed: its writer may not hold its lock yet.
STALE_AFTER_S = 60.0


class Manifest(BaseModel):
    """What a task hands to the next: where a dataset is and what it claims to be."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str
    rows: int
    contract: str
    version: str
    sha256: str

    @property
    def path(self) -> Path:
        return Path(self.uri.removeprefix("file://"))


class DatasetMissingError(FileNotFoundError):
    pass


def write_dataset(df: pl.DataFrame, contract_name: str, root: Path) -> Manifest:
    """Validate `df` against its contract and write it atomically under root/<contract>/.

    The bytes go to a temp file `.<contract>.<random>.partial` in the target folder, are
    fsynced, hashed and renamed to `<contract>-<sha256[:16]>.parquet`; a reader never sees a
    partial file, and partial files that a killed write left behind are removed first.
    Writing identical data twice yields the same file and manifest.
    """
    contract = get_contract(contract_name)
    df = contract.validate(df, where="on write")
    table = contract.to_arrow(df)
    folder = Path(root) / contract.name
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(folder)
    fd, tmp = _open_partial(folder, contract.name)
    try:
        with os.fdopen(fd, "wb") as fh:  # open (so locked) until renamed
            pq.write_table(table, fh, compression="zstd", write_statistics=True)
            fh.flush()
            os.fsync(fh.fileno())
            digest = sha256_of(tmp)
            final = folder / f"{contract.name}-{digest[:HASH_CHARS]}.parquet"
            os.replace(tmp, final)
        fsync_path(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Manifest(
        uri=final.resolve().as_uri(),
        rows=table.num_rows,
        contract=contract.name,
        version=contract.version,
        sha256=digest,
    )


def read_dataset(manifest: Manifest, verify_hash: bool = False) -> pl.DataFrame:
    """Read a dataset and validate it against its contract again (and its hash if asked)."""
    path = manifest.path
    if not path.exists():
        raise DatasetMissingError(
            f"dataset '{manifest.contract}' is missing at {path}; it was deleted after the task "
            "that wrote it ran. Re-run that stage with --rerun <stage> to write it again."
        )
    contract = get_contract(manifest.contract)
    if contract.version != manifest.version:
        raise ValueError(
            f"{path}: written under contract {manifest.contract} v{manifest.version}, "
            f"the code now has v{contract.version}; re-run the stage that writes it"
        )
    if verify_hash and sha256_of(path) != manifest.sha256:
        raise ValueError(f"{path}: content hash differs from its manifest; the file was modified")
    df = pl.read_parquet(path)
    if df.height != manifest.rows:
        raise ValueError(f"{path}: {df.height} rows but its manifest says {manifest.rows}")
    return contract.validate(df, where=f"on read of {path.name}")


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder: so a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write any artifact (model file, PNG, JSON) atomically: temp file in place, then rename."""
    return atomic_write_file(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_file(path: Path, write: Callable[[Path], object]) -> Path:
    """Write an artifact atomically through `write(temp path)`, for writers that take a path
    (safetensors' save_file): the temp file sits beside `path`, locked while it is written, and
    is fsynced and renamed over `path`, or removed if `write` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent, path.name)
    fd, tmp = _open_partial(path.parent, path.name)
    try:  # the lock is held on fd until the rename
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return path


def _open_partial(folder: Path, name: str) -> tuple[int, Path]:
    """Create `.<name>.<random>.partial` in folder, locked for as long as this write holds it.

    The lock (flock) is released by the kernel when the writing process dies, which is how
    `remove_stale_partials` tells a killed write from one in progress (in any process or thread).
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=PARTIAL_SUFFIX, dir=folder)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd, Path(tmp_name)


def remove_stale_partials(folder: Path, name: str | None = None) -> list[Path]:
    """Delete the partial files in `folder` (of `name`, or all) that no live write holds.

    A file counts as stale when nobody holds its lock and it is older than STALE_AFTER_S.
    Returns the removed paths.
    """
    prefix = "*" if name is None else glob.escape(name)
    patterns = [f".{prefix}.*{PARTIAL_SUFFIX}"] + ([_LEGACY_PARTIAL] if name is None else [])
    removed = []
    for path in sorted({p for pattern in patterns for p in Path(folder).glob(pattern)}):
        try:
            if time.time() - path.stat().st_mtime < STALE_AFTER_S:
                continue
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # finished (renamed) or removed by another writer meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
            removed.append(path)
        except BlockingIOError:  # a live write holds it
            pass
        finally:
            os.close(fd)
    return removed
