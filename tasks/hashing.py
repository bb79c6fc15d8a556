"""Content hashes of files (datasets, fetched archives), read in 1 MiB blocks."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parts_key(*parts: str) -> str:
    """A short (16 hex) key of the given strings, for output folders named by their inputs
    (a rerun with the same inputs finds, and resumes, the same folder)."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
