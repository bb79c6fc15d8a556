"""The ``parquet`` adapter: one document per row of a user's Parquet file. An unreadable file is
one error record; a row whose text is not a usable string is an error record holding the row."""

from __future__ import annotations

import json
from collections.abc import Iterator

from tasks.data.reader_base import (
    ReaderOptions,
    Record,
    check_text,
    error_record,
    invalid_bytes,
    optional_str,
    wanted_columns,
    with_id,
)


class ParquetOptions(ReaderOptions):
    text_column: str = "text"
    title_column: str | None = None
    url_column: str | None = None
    id_column: str | None = None


def read_parquet(
    data: bytes, location: str, encoding: str, opts: ParquetOptions
) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one error record
        yield error_record(location, f"not a readable Parquet file: {e}", data[:200].hex())
        return
    missing = [c for c in wanted_columns(opts) if c not in table.column_names]
    if missing:
        yield error_record(
            location,
            f"missing column(s) {missing}; columns are {table.column_names}",
            str(table.schema),
        )
        return
    columns = {c: table.column(c).to_pylist() for c in wanted_columns(opts)}
    for i in range(table.num_rows):
        loc = f"{location}:row {i + 1}"
        if opts.id_column:
            loc = with_id(loc, columns[opts.id_column][i])
        value = columns[opts.text_column][i]
        if isinstance(value, bytes):  # a binary column: decode here, naming any bad byte
            try:
                value = value.decode(encoding)
            except UnicodeDecodeError as e:
                yield error_record(
                    loc,
                    invalid_bytes(encoding, e.start) + " of the text value",
                    _row_payload(table, i),
                )
                continue
        if problem := check_text(value, f"column {opts.text_column!r}"):
            yield error_record(loc, problem, _row_payload(table, i))
            continue
        title = columns[opts.title_column][i] if opts.title_column else None
        url = columns[opts.url_column][i] if opts.url_column else None
        record_id = optional_str(columns[opts.id_column][i]) if opts.id_column else None
        yield Record(loc, value, optional_str(title), optional_str(url), record_id=record_id)


def _row_payload(table, i: int) -> str:
    return json.dumps(table.slice(i, 1).to_pylist()[0], default=str, ensure_ascii=False)
