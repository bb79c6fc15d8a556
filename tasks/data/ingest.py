"""Ingestion: sources -> a raw-documents frame and a quarantine frame. Pure code, no downloads.

Each source's files are read from its verified package archive (see `tasks.data.fetch`) or from
the user's own path, and its adapter turns them into records. Good records become rows of
`raw_documents`; records that could not be read become rows of `quarantine` with the error.
Row accounting per source and in total: ``in = kept + quarantined``.

With `max_docs_per_source` (the tiny preset's slice) each source keeps a seeded random sample
of its good records; its error records are always all quarantined. Records that the slice
leaves out are counted as ``sliced_out_<source>`` and are not part of ``in``.

Every good record is normalised before the slice: control characters are removed from its
text and title (`tasks.textio.normalise_controls`; ``control_chars_<source>`` counts them,
``normalised_<source>`` the records changed), and a text with nothing visible left becomes an
error record. A record whose id (`id_field` / `id_column`) repeats an earlier one of its source
is kept, counted in ``duplicate_ids_<source>`` and marked in its location with the location of
the first record with that id. ``encoding_fallback_<source>`` counts the good records whose
text was decoded with a fallback encoding.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import io
import os
import random
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from tasks.data.adapters import get_adapter
from tasks.data.catalog import SourceSpec
from tasks.data.fetch import verified_archive
from tasks.data.reader_base import PAYLOAD_MAX_CHARS, Record
from tasks.progress import progress
from tasks.textio import is_blank, normalise_controls

STAGE = "ingest"

RAW_DOCUMENTS_SCHEMA = {
    "doc_id": pl.Utf8,  # "<source>:<n>", n = the record's index within its source
    "source": pl.Utf8,
    "domain": pl.Utf8,
    "url": pl.Utf8,
    "title": pl.Utf8,
    "text": pl.Utf8,
    "factual": pl.Boolean,
    "license": pl.Utf8,
    "location": pl.Utf8,
}
QUARANTINE_SCHEMA = {
    "source": pl.Utf8,
    "location": pl.Utf8,
    "stage": pl.Utf8,
    "error": pl.Utf8,
    "payload": pl.Utf8,
}

_ZIP_SUFFIXES = (".zip", ".whl")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


# ---------------------------------------------------------------------------------------------
# Reading a source's files: (location, bytes) for each file its spec names


def iter_source_files(spec: SourceSpec, cache_dir: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (location, bytes) for each file of `spec`, in a stable (sorted) order.

    `member` is a glob (fnmatch: ``*`` also crosses ``/``) inside the archive or folder;
    ``a.zip!b.csv`` steps into the nested archive ``a.zip`` and takes ``b.csv`` from it.
    """
    if spec.from_package:
        root, label = verified_archive(spec, cache_dir), spec.archive
        yield from _walk(spec, label, _list_container(root, label), spec.member.split("!"))
        return
    paths = sorted(glob.glob(spec.path)) if glob.has_magic(spec.path) else [spec.path]
    if not paths or not Path(paths[0]).exists():
        raise FileNotFoundError(f"source {spec.name!r}: path {spec.path!r} matches no file")
    for p in map(Path, paths):
        label = str(p)
        if spec.member is not None:
            yield from _walk(spec, label, _list_container(p, label), spec.member.split("!"))
        elif p.is_dir():
            raise ValueError(
                f"source {spec.name!r}: {label} is a folder; set `member` to a glob "
                f"such as '*.txt' to say which files to read"
            )
        else:
            yield label, p.read_bytes()


def _walk(
    spec: SourceSpec, label: str, members: dict[str, Callable[[], bytes]], patterns: list[str]
):
    pattern, rest = patterns[0], patterns[1:]
    names = sorted(n for n in members if fnmatch.fnmatchcase(n, pattern))
    if not names:
        sample = sorted(members)[:8]
        raise ValueError(
            f"source {spec.name!r}: member {pattern!r} matches nothing in {label} "
            f"(it holds {len(members)} files, e.g. {sample})"
        )
    for name in names:
        location, data = f"{label}!{name}", members[name]()
        if rest:
            yield from _walk(spec, location, _list_container(data, location), rest)
        else:
            yield location, data


def _list_container(source: Path | bytes, label: str) -> dict[str, Callable[[], bytes]]:
    """File name -> a function returning its bytes, for a folder, zip or tar (path or bytes)."""
    name = label.rsplit("!", 1)[-1].lower()
    if isinstance(source, Path) and source.is_dir():
        return _folder_members(source)
    if name.endswith(_ZIP_SUFFIXES):
        zf = zipfile.ZipFile(source if isinstance(source, Path) else io.BytesIO(source))
        return {i.filename: (lambda i=i: zf.read(i)) for i in zf.infolist() if not i.is_dir()}
    if name.endswith(_TAR_SUFFIXES):
        # one pass in archive order (seeking backwards in a compressed tar re-reads it)
        fileobj = None if isinstance(source, Path) else io.BytesIO(source)
        with tarfile.open(name=source if fileobj is None else None, fileobj=fileobj) as tf:
            data = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}
        return {n: (lambda b=b: b) for n, b in data.items()}
    raise ValueError(f"{label}: `member` given, but this is not a folder, zip or tar archive")


@dataclass(frozen=True)
class SkippedFile:
    """A folder entry that is not read, and why; it becomes a quarantine row with the reason."""

    reason: str


SKIPPED = "skipped: "  # starts the reason of a skipped file's quarantine row


def _folder_members(root: Path) -> dict[str, Callable[[], bytes | SkippedFile]]:
    """The files under `root`; a symbolic link is read only when it stays inside `root`.

    Links that leave the folder (a link to /etc/passwd), loop (to themselves or to a folder
    above them) or point nowhere are skipped with their reason. Links to folders inside `root`
    are not descended: their files are read once, at their real path.
    """
    real_root, members = root.resolve(), {}
    for p in sorted(root.rglob("*")):
        name = p.relative_to(root).as_posix()
        if p.is_symlink() and (skipped := _skipped_link(p, real_root)):
            members[name] = lambda s=skipped: s
        elif p.is_file():
            members[name] = p.read_bytes
    return members


def _skipped_link(link: Path, real_root: Path) -> SkippedFile | None:
    target = os.readlink(link)
    try:
        real = link.resolve(strict=True)
    except RuntimeError:  # a loop, before Python 3.13 (since: OSError ELOOP)
        return SkippedFile(f"symbolic link loop (-> {target})")
    except OSError as e:
        if e.errno == errno.ELOOP:
            return SkippedFile(f"symbolic link loop (-> {target})")
        return SkippedFile(f"broken symbolic link (-> {target}: {e.strerror})")
    if real != real_root and real_root not in real.parents:
        return SkippedFile(f"symbolic link leaves the source folder {real_root} (-> {real})")
    if real.is_dir() and (real == link.parent.resolve() or real in link.parent.resolve().parents):
        return SkippedFile(f"symbolic link loop (-> {target}, a folder that contains it)")
    return None


# ---------------------------------------------------------------------------------------------
# Ingestion


def read_source(spec: SourceSpec, cache_dir: Path) -> Iterator[Record]:
    """All records of one source, in order (good ones and error ones)."""
    adapter, options = get_adapter(spec.adapter), spec.adapter_options()
    for location, data in iter_source_files(spec, cache_dir):
        if isinstance(data, SkippedFile):
            yield Record(location, None, error=f"{location}: {SKIPPED}{data.reason}")
        else:
            yield from adapter.read(data, location, spec.encoding, options)


def ingest(
    specs: list[SourceSpec], cache_dir: Path, max_docs_per_source: int | None = None, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Read every source into (raw_documents, quarantine, stats); see the module docstring."""
    if max_docs_per_source is not None and max_docs_per_source < 0:
        raise ValueError(f"max_docs_per_source must be >= 0 or None, got {max_docs_per_source}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique, got {names}")
    docs = {col: [] for col in RAW_DOCUMENTS_SCHEMA}
    quarantine = {col: [] for col in QUARANTINE_SCHEMA}
    stats: dict[str, int] = {}
    for spec in progress(specs, "ingest sources", total=len(specs)):
        good, bad, n_read, checks = _split(spec, Path(cache_dir))
        kept = _slice(good, max_docs_per_source, seed, spec.name)
        for index, rec in kept:
            _append(
                docs,
                doc_id=f"{spec.name}:{index}",
                source=spec.name,
                domain=spec.domain,
                url=rec.url,
                title=rec.title,
                text=rec.text,
                factual=spec.factual,
                license=spec.license,
                location=rec.location,
            )
        for rec in bad:
            _append(
                quarantine,
                source=spec.name,
                location=rec.location,
                stage=STAGE,
                error=rec.error,
                payload=rec.payload,
            )
        stats |= {
            f"read_{spec.name}": n_read,
            f"in_{spec.name}": len(kept) + len(bad),
            f"kept_{spec.name}": len(kept),
            f"quarantined_{spec.name}": len(bad),
            f"skipped_{spec.name}": sum(f": {SKIPPED}" in rec.error for rec in bad),
            f"sliced_out_{spec.name}": len(good) - len(kept),
            f"bytes_{spec.name}": sum(len(rec.text.encode("utf-8")) for _, rec in kept),
        } | {f"{key}_{spec.name}": value for key, value in checks.items()}
    for total, prefix in [
        ("rows_in", "in_"),
        ("rows_kept", "kept_"),
        ("rows_quarantined", "quarantined_"),
        ("rows_sliced_out", "sliced_out_"),
        ("files_skipped", "skipped_"),
        ("bytes_kept", "bytes_"),
        ("control_chars", "control_chars_"),
        ("rows_normalised", "normalised_"),
        ("duplicate_ids", "duplicate_ids_"),
        ("rows_encoding_fallback", "encoding_fallback_"),
    ]:
        stats[total] = sum(stats[f"{prefix}{n}"] for n in names)
    assert stats["rows_in"] == stats["rows_kept"] + stats["rows_quarantined"]
    return (
        pl.DataFrame(docs, schema=RAW_DOCUMENTS_SCHEMA),
        pl.DataFrame(quarantine, schema=QUARANTINE_SCHEMA),
        stats,
    )


_CHECKS = ("control_chars", "normalised", "duplicate_ids", "encoding_fallback")


def _split(
    spec: SourceSpec, cache_dir: Path
) -> tuple[list[tuple[int, Record]], list[Record], int, dict[str, int]]:
    """(good records with their index, error records, records read, counts of _CHECKS)."""
    good, bad, n = [], [], 0
    checks = dict.fromkeys(_CHECKS, 0)
    first_with_id: dict[str, str] = {}
    for n, rec in enumerate(read_source(spec, cache_dir), start=1):
        if rec.error is None:
            rec = _normalise(rec, checks)
        if rec.error is not None:
            bad.append(rec)
            continue
        if rec.record_id is not None:
            first = first_with_id.setdefault(rec.record_id, rec.location)
            if first != rec.location:
                checks["duplicate_ids"] += 1
                rec = replace(rec, location=f"{rec.location} (duplicate id, first at {first})")
        checks["encoding_fallback"] += rec.encoding is not None
        good.append((n - 1, rec))
    return good, bad, n, checks


def _normalise(rec: Record, checks: dict[str, int]) -> Record:
    """`rec` without control characters (counted); an error record when no text is left."""
    text, removed = normalise_controls(rec.text)
    title, removed_title = normalise_controls(rec.title) if rec.title else (rec.title, 0)
    if not removed + removed_title:
        return rec
    checks["control_chars"] += removed + removed_title
    checks["normalised"] += 1
    if is_blank(text):
        message = "text is empty after removing control characters (NUL, BEL, ANSI escapes, ...)"
        return replace(
            rec,
            text=None,
            title=None,
            url=None,
            error=f"{rec.location}: {message}",
            payload=rec.text[:PAYLOAD_MAX_CHARS],
        )
    return replace(rec, text=text, title=title or None)


def _slice(good: list[tuple[int, Record]], k: int | None, seed: int, source: str):
    """A seeded sample of k good records, kept in source order (all of them for k=None)."""
    if k is None or k >= len(good):
        return good
    rng = random.Random(f"{seed}:{source}")  # str seeds hash with sha512: stable across runs
    return [good[i] for i in sorted(rng.sample(range(len(good)), k))]


def _append(columns: dict[str, list], **values) -> None:
    for col, value in values.items():
        columns[col].append(value)
