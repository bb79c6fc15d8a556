"""A user's awkward files through the real corpus readers (issue 13, items 1-7): byte-order
marks, legacy encodings, binary files, deep nesting, stray CSV quotes, control characters,
duplicate ids and a JSON array saved as JSON Lines. Every good row is kept, every bad one is
quarantined with its file and line, and rows_in = kept + quarantined counts every line."""

from __future__ import annotations

import json
import random

from prefect import flow

from tasks.corpus.steps import ingest_sources
from tasks.data.catalog import SourceSpec
from tasks.data.ingest import ingest
from tasks.io import read_dataset
from tasks.textio import JSON_ARRAY_MESSAGE, is_json_array, normalise_controls, sniff_text

BOM = b"\xef\xbb\xbf"


def _spec(name: str, path, adapter: str = "jsonl", **extra) -> SourceSpec:
    return SourceSpec(
        name=name,
        domain="notes",
        factual=False,
        license="CC0",
        adapter=adapter,
        path=str(path),
        **extra,
    )


def _jsonl(*texts: str) -> bytes:
    return b"".join(json.dumps({"text": t}).encode() + b"\n" for t in texts)


def _ingest(tmp_path, *specs):
    docs, quarantine, stats = ingest(list(specs), tmp_path, None, seed=0)
    assert stats["rows_in"] == stats["rows_kept"] + stats["rows_quarantined"]
    return docs, quarantine, stats


# ---- 1. a UTF-8 byte-order mark is accepted in JSONL, CSV and .txt ---------------------------


def test_byte_order_mark_is_dropped_in_jsonl_csv_header_and_txt(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(BOM + _jsonl("first row", "second row"))
    (tmp_path / "b.csv").write_bytes(BOM + b"text,title\nfrom csv,T\n")
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "c.txt").write_bytes(BOM + b"A plain note.\n")
    docs, quarantine, stats = _ingest(
        tmp_path,
        _spec("j", tmp_path / "a.jsonl"),
        _spec("c", tmp_path / "b.csv", "csv", options={"title_column": "title"}),
        _spec("t", tmp_path / "txt", "txt_folder", member="*.txt"),
    )
    assert quarantine.height == 0
    assert docs["text"].to_list() == ["first row", "second row", "from csv", "A plain note.\n"]
    assert not any("\ufeff" in t for t in docs["text"]) and docs["title"][2] == "T"
    assert (stats["in_j"], stats["in_c"], stats["in_t"]) == (2, 1, 1)


# ---- 2. legacy encodings are decoded and flagged; binary files say "binary" ------------------


def test_latin1_txt_and_cp1252_csv_are_kept_and_flagged_with_their_encoding(tmp_path):
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "fr.txt").write_bytes("Café déjà vu à Noël.\n".encode("latin-1"))
    (tmp_path / "txt" / "en.txt").write_bytes(b"Plain ASCII.\n")
    (tmp_path / "w.csv").write_bytes(
        "text\n\u201cSmart quotes\u201d cost 5 \u20ac\nplain row\n".encode("cp1252")
    )
    docs, quarantine, stats = _ingest(
        tmp_path,
        _spec("t", tmp_path / "txt", "txt_folder", member="*.txt"),
        _spec("w", tmp_path / "w.csv", "csv"),
    )
    assert quarantine.height == 0
    got = dict(zip(docs["text"], docs["location"]))
    # latin-1 and cp1252 agree on every printable latin-1 byte: the file reads as cp1252
    assert got["Café déjà vu à Noël.\n"] == f"{tmp_path}/txt!fr.txt encoding=cp1252"
    assert (
        got["\u201cSmart quotes\u201d cost 5 \u20ac"] == f"{tmp_path}/w.csv:row 1 encoding=cp1252"
    )
    # ASCII reads alike in every encoding: not flagged
    assert got["Plain ASCII.\n"] == f"{tmp_path}/txt!en.txt"
    assert got["plain row"] == f"{tmp_path}/w.csv:row 2"
    assert (stats["encoding_fallback_t"], stats["encoding_fallback_w"]) == (1, 1)
    assert stats["rows_encoding_fallback"] == 2


def test_declared_encoding_is_used_before_the_fallback(tmp_path):
    (tmp_path / "ru.txt").write_bytes("Привет, мир".encode("cp1251"))
    (tmp_path / "utf8.txt").write_bytes("Привет, мир".encode("utf-8"))
    docs, _, _ = _ingest(
        tmp_path,
        _spec("ru", tmp_path / "ru.txt", "txt_folder", encoding="cp1251"),
        _spec("u8", tmp_path / "utf8.txt", "txt_folder", encoding="cp1251"),
    )
    assert docs["text"].to_list() == ["Привет, мир", "Привет, мир"]
    # the declared encoding is not flagged; a UTF-8 file under a cp1251 declaration is
    assert docs["location"].to_list() == [
        str(tmp_path / "ru.txt"),
        f"{tmp_path / 'utf8.txt'} encoding=utf-8",
    ]


def test_binary_files_are_quarantined_as_binary(tmp_path):
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "photo.txt").write_bytes(png)
    (tmp_path / "txt" / "ok.txt").write_bytes(b"fine\n")
    (tmp_path / "data.jsonl").write_bytes(png)
    docs, quarantine, stats = _ingest(
        tmp_path,
        _spec("t", tmp_path / "txt", "txt_folder", member="*.txt"),
        _spec("j", tmp_path / "data.jsonl"),
    )
    assert docs["text"].to_list() == ["fine\n"]
    assert quarantine["error"].to_list() == [
        f"{tmp_path}/txt!photo.txt: binary file, not text (NUL byte at byte offset 8); if it is "
        "UTF-16 or UTF-32 text, save it as UTF-8 or set the source's encoding",
        f"{tmp_path}/data.jsonl: binary file, not text (NUL byte at byte offset 8); if it is "
        "UTF-16 or UTF-32 text, save it as UTF-8 or set the source's encoding",
    ]
    assert (stats["in_t"], stats["quarantined_t"], stats["in_j"]) == (2, 1, 1)


def test_sniffing_rules():
    assert sniff_text(b"plain") == ("utf-8", None)
    assert sniff_text("é".encode() * 3 + b"\xff") == ("utf-8", None)  # UTF-8, one damaged byte
    assert sniff_text(b"caf\xe9") == ("cp1252", None)
    assert sniff_text(b"\x81\xe9") == ("latin-1", None)  # 0x81 is undefined in cp1252
    assert sniff_text(BOM + b"caf\xe9") == ("utf-8", None)  # a BOM says UTF-8
    assert sniff_text("hi".encode("utf-16"), "utf-16") == ("utf-16", None)
    assert sniff_text("hi".encode("utf-16")).binary.startswith("binary file")
    rng = random.Random(0)
    noise = bytes(rng.randrange(1, 256) for _ in range(4096))  # random bytes without a NUL
    assert sniff_text(noise).binary.startswith("binary file, not text (")
    assert sniff_text(b"log \x1b[31mred\x1b[0m bell\x07\n" * 50).binary is None
    assert not is_json_array(b"[" * 100_000 + b"\n")  # too deep to parse: not an array file


# ---- 3. a line nested 100,000 deep is one quarantined line, not a crash ----------------------


def test_deeply_nested_json_line_is_quarantined_with_file_and_line(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_bytes(_jsonl("before") + b"[" * 100_000 + b"]" * 100_000 + b"\n" + _jsonl("after"))
    docs, quarantine, stats = _ingest(tmp_path, _spec("d", path))
    assert docs["text"].to_list() == ["before", "after"]
    assert quarantine["error"].to_list() == [
        f"{path}:line 2: bad JSON: nested too deeply to parse (beyond Python's recursion limit)"
    ]
    assert (stats["in_d"], stats["kept_d"], stats["quarantined_d"]) == (3, 2, 1)


# ---- 4. a stray CSV quote costs its row, not the rest of the file ----------------------------


def test_csv_stray_quote_in_row_4_quarantines_that_row_and_reads_on(tmp_path):
    lines = [
        b"id,text",
        b"1,one",
        b"2,two",
        b"3,three",
        b'4,"four" and more',
        b"5,five",
        b'6,"never closed',
        b"7,seven",
        b"8,eight",
    ]
    path = tmp_path / "q.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    docs, quarantine, stats = _ingest(
        tmp_path, _spec("q", path, "csv", options={"id_column": "id"})
    )
    assert docs["text"].to_list() == ["one", "two", "three", "five", "seven", "eight"]
    assert docs["location"][3] == f"{path}:row 5 id=5"
    assert quarantine["error"].to_list() == [
        f"{path}:row 4: csv quoting error at line 5: ',' expected after '\"'; this line is "
        "quarantined and reading resumes at line 6",
        f"{path}:row 6: csv quoting error at line 7: unexpected end of data; this line is "
        "quarantined and reading resumes at line 8",
    ]
    assert quarantine["payload"].to_list() == ['4,"four" and more', '6,"never closed']
    # every data line of the file is accounted for
    assert stats["in_q"] == stats["kept_q"] + stats["quarantined_q"] == len(lines) - 1


def test_csv_quoted_newlines_still_make_one_row(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b'text\n"two\nlines"\n"a ""quoted"" word"\n')
    docs, quarantine, _ = _ingest(tmp_path, _spec("m", path, "csv"))
    assert docs["text"].to_list() == ["two\nlines", 'a "quoted" word'] and quarantine.height == 0
    assert docs["location"].to_list() == [f"{path}:row 1", f"{path}:row 2"]


# ---- 5. control characters are removed and counted; invisible text is empty ------------------


def test_control_characters_are_removed_counted_and_invisible_texts_quarantined(tmp_path):
    path = tmp_path / "ctl.jsonl"
    path.write_bytes(
        _jsonl(
            "nul\x00 and bell\x07",
            "\x1b[31mred\x1b[0m text",
            "page\x0cbreak",
            "clean",
            "\u200b\u200d\ufeff",
            "\x00\x07\x1b[0m",
        )
    )
    docs, quarantine, stats = _ingest(tmp_path, _spec("c", path))
    assert docs["text"].to_list() == ["nul and bell", "red text", "page\nbreak", "clean"]
    assert quarantine["error"].to_list() == [
        f"{path}:line 5: field 'text' is empty (only zero-width characters)",
        f"{path}:line 6: text is empty after removing control characters (NUL, BEL, ANSI "
        "escapes, ...)",
    ]
    # 2 + 9 ("\x1b[31m", "\x1b[0m") + 1 + 6 (line 6) characters; lines 1-3 and 6 changed
    assert (stats["control_chars_c"], stats["normalised_c"]) == (18, 4)
    assert (stats["in_c"], stats["kept_c"], stats["quarantined_c"]) == (6, 4, 2)


def test_normalise_controls_keeps_tabs_newlines_and_unicode():
    assert normalise_controls("a\tb\r\nc é \u200d") == ("a\tb\r\nc é \u200d", 0)
    assert normalise_controls("x\x08\x7f\x85y\x1b]0;title\x07z") == ("xyz", 13)


# ---- 6. duplicate ids are kept, counted and located ------------------------------------------


def test_duplicate_ids_are_counted_and_each_names_the_first(tmp_path):
    path = tmp_path / "ids.jsonl"
    rows = [
        {"id": 1, "text": "a"},
        {"id": 2, "text": "b"},
        {"id": 1, "text": "c"},
        {"id": 3, "text": "d"},
        {"id": 2, "text": "e"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    csv_path = tmp_path / "ids.csv"
    csv_path.write_text("id,text\n7,x\n7,y\n")
    docs, _, stats = _ingest(
        tmp_path,
        _spec("j", path, options={"id_field": "id"}),
        _spec("c", csv_path, "csv", options={"id_column": "id"}),
    )
    assert docs["text"].to_list() == ["a", "b", "c", "d", "e", "x", "y"]  # all kept
    assert (stats["duplicate_ids_j"], stats["duplicate_ids_c"], stats["duplicate_ids"]) == (2, 1, 3)
    assert docs["location"][2] == f"{path}:line 3 id=1 (duplicate id, first at {path}:line 1 id=1)"
    assert docs["location"][4] == f"{path}:line 5 id=2 (duplicate id, first at {path}:line 2 id=2)"
    assert docs["location"][6] == (
        f"{csv_path}:row 2 id=7 (duplicate id, first at {csv_path}:row 1 id=7)"
    )


# ---- 7. a JSON array saved as .jsonl says so -------------------------------------------------


def test_json_array_saved_as_jsonl_says_so_on_every_line(tmp_path):
    pretty = tmp_path / "pretty.jsonl"
    pretty.write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=2) + "\n")
    one_line = tmp_path / "one.jsonl"
    one_line.write_text(json.dumps([{"text": "a"}, {"text": "b"}]) + "\n")
    docs, quarantine, stats = _ingest(tmp_path, _spec("p", pretty), _spec("o", one_line))
    n_lines = len(pretty.read_text().splitlines())  # 8: "[", 2 x 3 object lines, "]"
    assert docs.height == 0 and stats["in_p"] == stats["quarantined_p"] == n_lines == 8
    assert stats["in_o"] == stats["quarantined_o"] == 1
    assert quarantine["error"][0] == f"{pretty}:line 1: {JSON_ARRAY_MESSAGE}"
    assert all(
        e.endswith(
            "this file is a JSON array, not JSON Lines (one JSON object per line); "
            "convert it, e.g. with jq -c '.[]'"
        )
        for e in quarantine["error"]
    )


# ---- the real stage path: the corpus ingest task, its contract and the written datasets ------


def test_ingest_task_writes_every_case_and_accounts_for_every_row(tmp_path):
    src = tmp_path / "mine"
    src.mkdir()
    (src / "a.jsonl").write_bytes(
        BOM + _jsonl("bom first", "bell\x07 here") + b"[" * 50_000 + b"\n" + _jsonl("last")
    )
    (src / "b.jsonl").write_bytes(b"[\n" + _jsonl("x") + b"]\n")
    specs = [_spec("mine", src, member="*.jsonl")]

    @flow(name="ingest-hardening")
    def run():
        return ingest_sources(specs, str(tmp_path), None, 0, str(tmp_path / "data"))

    out = run()
    docs = read_dataset(out.outputs["raw_documents"])
    quarantine = read_dataset(out.outputs["quarantine"])
    assert docs["text"].to_list() == ["bom first", "bell here", "last"]
    locations = [loc.removeprefix(f"{src}!") for loc in quarantine["location"]]
    assert locations == ["a.jsonl:line 3", "b.jsonl:line 1", "b.jsonl:line 2", "b.jsonl:line 3"]
    stats = out.stats
    assert (
        stats["ingest.rows_in"] == 7 == stats["ingest.rows_kept"] + stats["ingest.rows_quarantined"]
    )
    assert stats["ingest.control_chars"] == 1.0
