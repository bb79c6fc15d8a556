"""The catalog's validation errors, and fetching pinned archives (with a stand-in for pip)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tasks.data import fetch
from tasks.data.catalog import Catalog, CatalogError, SourceSpec, load_catalog
from tasks.data.fetch import FetchError, fetch_all, fetch_package, verified_archive

REPO = Path(__file__).resolve().parents[3]
CATALOG = REPO / "configs" / "catalog.yaml"


def _entry(**overrides) -> dict:
    entry = {
        "name": "toy",
        "domain": "news",
        "factual": True,
        "license": "CC0",
        "adapter": "jsonl",
        "options": {"text_field": "body"},
        "package": "toy",
        "version": "1.0",
        "archive": "toy-1.0-py3-none-any.whl",
        "sha256": "a" * 64,
        "member": "toy/data.jsonl",
    }
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not None}


def _write(tmp_path: Path, *entries: dict) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"sources": list(entries)}))
    return path


# ---- the shipped catalog ----------------------------------------------------------------------


def test_shipped_catalog_loads_with_every_embedded_source():
    catalog = load_catalog(CATALOG)
    assert catalog.names == [
        "news",
        "health_tweets",
        "commons_speeches",
        "boolq_wikipedia",
        "quac_wikipedia",
        "xsum_bbc",
        "multilexsum_legal",
        "shakespeare",
        "shakespeare_folio",
        "fortunes",
        "fortunes_offensive",
    ]
    assert all(s.from_package and s.member for s in catalog.sources)
    assert catalog.get("fortunes_offensive").adapter_options().rot13 is True
    assert {s.domain for s in catalog.sources} == {
        "news",
        "social",
        "speech",
        "wikipedia",
        "legal",
        "literature",
        "humor",
    }


# ---- validation errors name the file, the entry and the key ------------------------------------


def test_valid_entry_loads(tmp_path):
    catalog = load_catalog(_write(tmp_path, _entry()))
    assert catalog.get("toy").requirement == "toy==1.0"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"colour": "red"}, ["source #1 ('toy')", "'colour'", "Extra inputs are not permitted"]),
        ({"sha256": "abc"}, ["source #1 ('toy')", "'sha256'", "pattern"]),
        ({"adapter": "xml"}, ["'adapter'", "unknown adapter 'xml'", "jsonl"]),
        ({"options": {"txt_field": "x"}}, ["'options'", "adapter 'jsonl'", "txt_field", "allowed"]),
        ({"encoding": "klingon"}, ["'encoding'", "unknown text encoding 'klingon'"]),
        ({"member": None}, ["source #1 ('toy')", "needs ['member']"]),
        ({"path": "data/x.jsonl"}, ["either `path`", "package"]),
        ({"factual": None}, ["'factual'", "Field required"]),
        ({"name": "Bad Name"}, ["'name'", "pattern"]),
    ],
)
def test_invalid_entry_is_named_in_the_error(tmp_path, overrides, expected):
    path = _write(tmp_path, _entry(**overrides))
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    message = str(err.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_error_points_at_the_right_entry(tmp_path):
    path = _write(tmp_path, _entry(), _entry(name="second", sha256="nothex"))
    with pytest.raises(CatalogError, match=r"source #2 \('second'\), key 'sha256'"):
        load_catalog(path)


def test_path_source_needs_no_package_keys(tmp_path):
    entry = _entry(
        package=None, version=None, archive=None, sha256=None, member=None, path="data/mine.jsonl"
    )
    spec = load_catalog(_write(tmp_path, entry)).get("toy")
    assert not spec.from_package and spec.path == "data/mine.jsonl"


def test_duplicate_names_and_disagreeing_pins_are_rejected(tmp_path):
    with pytest.raises(CatalogError, match="'toy' appears twice"):
        load_catalog(_write(tmp_path, _entry(), _entry()))
    with pytest.raises(CatalogError, match="toy==1.0: sources disagree"):
        load_catalog(_write(tmp_path, _entry(), _entry(name="other", sha256="b" * 64)))


def test_file_level_errors(tmp_path):
    with pytest.raises(CatalogError, match="catalog file not found"):
        load_catalog(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [unclosed\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(CatalogError, match="`sources:` list"):
        load_catalog(bad)


def test_select_unknown_source_lists_the_known_ones(tmp_path):
    catalog = load_catalog(_write(tmp_path, _entry()))
    with pytest.raises(CatalogError, match=r"unknown source\(s\) \['nope'\].*\['toy'\]"):
        catalog.select(["nope"])


# ---- fetch: idempotent, verified, atomic (a local copy stands in for the registry) ------------


@pytest.fixture()
def local_wheel(tmp_path) -> Path:
    wheel = tmp_path / "registry" / "toy-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK pretend wheel bytes")
    return wheel


def _spec_for(wheel: Path, **overrides) -> SourceSpec:
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return SourceSpec(**_entry(**{"archive": wheel.name, "sha256": sha, **overrides}))


class CopyDownloader:
    """Stands in for `pip download`: copies a local file into the destination folder."""

    def __init__(self, source: Path):
        self.source, self.calls = source, []

    def __call__(self, requirement: str, dest: Path, archive: str) -> None:
        self.calls.append(requirement)
        shutil.copy(self.source, dest / self.source.name)


def test_fetch_downloads_once_then_only_verifies(tmp_path, local_wheel):
    spec, cache = _spec_for(local_wheel), tmp_path / "cache"
    download = CopyDownloader(local_wheel)
    first = fetch_package(spec, cache, download=download)
    second = fetch_package(spec, cache, download=download)
    assert first == second == cache / local_wheel.name
    assert first.read_bytes() == local_wheel.read_bytes()
    assert download.calls == ["toy==1.0"]  # the second call found a verified copy
    assert os.listdir(cache) == [local_wheel.name]  # no temporary folder left behind
    assert verified_archive(spec, cache) == first


def test_fetch_hash_mismatch_names_package_and_both_hashes(tmp_path, local_wheel):
    spec, cache = _spec_for(local_wheel), tmp_path / "cache"
    tampered = tmp_path / "tampered" / local_wheel.name
    tampered.parent.mkdir()
    tampered.write_bytes(b"something else")
    actual = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(FetchError) as err:
        fetch_package(spec, cache, download=CopyDownloader(tampered))
    assert (
        "toy==1.0" in str(err.value) and spec.sha256 in str(err.value) and actual in str(err.value)
    )
    assert os.listdir(cache) == []  # nothing half-written, no temporary folder


def test_fetch_replaces_a_corrupted_cached_copy(tmp_path, local_wheel):
    spec, cache = _spec_for(local_wheel), tmp_path / "cache"
    cache.mkdir()
    (cache / local_wheel.name).write_bytes(b"truncated")
    with pytest.raises(FetchError, match="delete the file"):
        verified_archive(spec, cache)
    download = CopyDownloader(local_wheel)
    assert fetch_package(spec, cache, download=download).read_bytes() == local_wheel.read_bytes()
    assert download.calls == ["toy==1.0"]


def test_fetch_reports_an_unexpected_file_name(tmp_path, local_wheel):
    spec = _spec_for(local_wheel, archive="toy-1.0.tar.gz")
    with pytest.raises(
        FetchError, match=r"saved \['toy-1.0-py3-none-any.whl'\], expected toy-1.0.tar.gz"
    ):
        fetch_package(spec, tmp_path / "cache", download=CopyDownloader(local_wheel))


def test_verified_archive_tells_how_to_fetch_a_missing_one(tmp_path, local_wheel):
    with pytest.raises(FileNotFoundError, match="python -m tasks.data.fetch .*--sources toy"):
        verified_archive(_spec_for(local_wheel), tmp_path / "cache")


def test_fetch_all_fetches_each_archive_once_and_skips_local_sources(tmp_path, local_wheel):
    a, b = _spec_for(local_wheel), _spec_for(local_wheel, name="toy_two", member="toy/other.jsonl")
    mine = SourceSpec(
        **_entry(
            name="mine",
            package=None,
            version=None,
            archive=None,
            sha256=None,
            member=None,
            path="x.jsonl",
        )
    )
    download, lines = CopyDownloader(local_wheel), []
    paths = fetch_all(
        Catalog(sources=[a, b, mine]), tmp_path / "cache", download=download, log=lines.append
    )
    assert paths == {
        "toy": tmp_path / "cache" / local_wheel.name,
        "toy_two": tmp_path / "cache" / local_wheel.name,
    }
    assert download.calls == ["toy==1.0"]
    assert len(lines) == 1 and "toy==1.0: downloaded" in lines[0]


def test_cli_fetches_selected_sources(tmp_path, local_wheel, monkeypatch, capsys):
    catalog = _write(
        tmp_path,
        _entry(
            archive=local_wheel.name, sha256=hashlib.sha256(local_wheel.read_bytes()).hexdigest()
        ),
    )
    monkeypatch.setattr(fetch, "pip_download", CopyDownloader(local_wheel))
    code = fetch.main(
        ["--catalog", str(catalog), "--cache-dir", str(tmp_path / "c"), "--sources", "toy"]
    )
    assert code == 0
    assert f"toy: {tmp_path / 'c' / local_wheel.name}" in capsys.readouterr().out
    assert fetch.main(["--catalog", str(catalog), "--sources", "nope"]) == 1
    assert "unknown source(s) ['nope']" in capsys.readouterr().err


@pytest.mark.network
@pytest.mark.skipif(
    os.environ.get("RECIPE_OFFLINE") == "1", reason="RECIPE_OFFLINE=1: no package index"
)
def test_real_pip_download_of_a_tiny_wheel(tmp_path):
    spec = SourceSpec(
        **_entry(
            package="six",
            version="1.17.0",
            archive="six-1.17.0-py2.py3-none-any.whl",
            sha256="4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274",
        )
    )
    path = fetch_package(spec, tmp_path)
    assert path.name == "six-1.17.0-py2.py3-none-any.whl" and path.stat().st_size > 1000
