"""Contract-checked, atomic, content-addressed Parquet I/O.

Tasks pass `Manifest`s (uri, rows, contract, version, sha256), never DataFrames. A dataset
file is named by the hash of its bytes, so a changed upstream file changes every downstream
task input, and Prefect's input-hash cache invalidates exactly what it should.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from data_contracts import get_contract
from tasks.hashing import sha256_of

HASH_CHARS = 16  # of the sha256 in a file name; the manifest keeps all 64


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

    The bytes go to a temp file in the target folder, are fsynced, hashed and renamed to
    `<contract>-<sha256[:16]>.parquet`; a reader never sees a partial file. Writing identical
    data twice yields the same file and manifest.
    """
    contract = get_contract(contract_name)
    df = contract.validate(df, where="on write")
    table = contract.to_arrow(df)
    folder = Path(root) / contract.name
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
