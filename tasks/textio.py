"""Reading a user's text bytes: encodings, byte-order marks, binary files, JSON lines, CSV records,
control characters. Pure code, shared by the corpus adapters and the SFT / preference readers.

Encoding of a text file (`sniff_text`), in this order:
1. a NUL byte in the first 8 KiB, or more than 5 % of it in other control bytes (not tab, line
   breaks or ESC), means a binary file (an image, an archive, or UTF-16/32 text), which is
   reported as such instead of being decoded into garbage;
2. a file that starts with a UTF-8 byte-order mark, or decodes as UTF-8, is UTF-8 (the mark is
   not part of the text);
3. otherwise the source's declared `encoding`, when it is not UTF-8 and decodes the file;
4. a file holding more valid UTF-8 multi-byte sequences than invalid bytes is UTF-8 with some
   damaged bytes: the rows holding them are quarantined, naming the byte offset;
5. otherwise a single-byte legacy encoding: cp1252 (Windows Western, a superset of latin-1's
   printable characters), or latin-1 when cp1252 leaves a byte undefined.
Rows decoded by a fallback are flagged by their readers (``encoding=cp1252`` in the location).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

UTF8_BOM = b"\xef\xbb\xbf"
BINARY_SNIFF_BYTES = 8192
BINARY_CONTROL_SHARE = 0.05  # random (compressed) bytes hold ~9 %, text next to none
_BINARY_BYTES = bytes([*range(0x01, 0x09), *range(0x0E, 0x1B), *range(0x1C, 0x20)])
FALLBACK_ENCODINGS = ("cp1252", "latin-1")  # latin-1 decodes any byte: the last resort
JSON_ARRAY_MESSAGE = (
    "this file is a JSON array, not JSON Lines (one JSON object per line); "
    "convert it, e.g. with jq -c '.[]'"
)

_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a bad byte


class Sniffed(NamedTuple):
    """How to read a file: its encoding, or why it is not text (`binary` set, encoding None)."""

    encoding: str | None
    binary: str | None = None


def _is_utf8(name: str) -> bool:
    return codecs.lookup(name).name == "utf-8"


def _is_wide(name: str) -> bool:
    return codecs.lookup(name).name.startswith(("utf-16", "utf-32"))


def sniff_text(data: bytes, declared: str = "utf-8") -> Sniffed:
    """The encoding to decode `data` with, by the rules of the module docstring."""
    if _is_wide(declared):  # declared UTF-16/32: NUL bytes are expected, the codec reads the BOM
        return Sniffed(declared)
    nul = data.find(b"\x00", 0, BINARY_SNIFF_BYTES)
    if nul >= 0:
        return Sniffed(
            None,
            f"binary file, not text (NUL byte at byte offset {nul}); if it is "
            "UTF-16 or UTF-32 text, save it as UTF-8 or set the source's encoding",
        )
    head = data[:BINARY_SNIFF_BYTES]
    controls = len(head) - len(head.translate(None, _BINARY_BYTES))
    if controls > BINARY_CONTROL_SHARE * len(head):
        return Sniffed(
            None,
            f"binary file, not text ({controls} of its first {len(head)} bytes are control bytes)",
        )
    has_bom = data.startswith(UTF8_BOM)
    try:
        data.decode("utf-8")
        return Sniffed("utf-8")
    except UnicodeDecodeError:
        pass
    if not has_bom and not _is_utf8(declared):
        try:
            data.decode(declared)
            return Sniffed(declared)
        except UnicodeDecodeError:
            pass
    valid = len(_UTF8_SEQUENCE.findall(data))
    invalid = len(_ESCAPED_BYTE.findall(data.decode("utf-8", "surrogateescape")))
    if has_bom or valid > invalid:
        return Sniffed("utf-8")
    for name in FALLBACK_ENCODINGS:
        try:
            data.decode(name)
            return Sniffed(name)
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def strip_bom(text: str) -> str:
    """`text` without a leading byte-order mark (U+FEFF), which editors write and JSON rejects."""
    return text[1:] if text.startswith("\ufeff") else text


def strip_bom_bytes(data: bytes) -> bytes:
    return data[len(UTF8_BOM) :] if data.startswith(UTF8_BOM) else data


# ---------------------------------------------------------------------------------------------
# JSON Lines


class JsonLineError(ValueError):
    """A line that is not JSON; the message says why and where in the line."""


def loads_line(line: str) -> Any:
    """`json.loads` for one line of a user's file: every failure is a JsonLineError.

    A line nested deeper than Python's recursion limit (e.g. 100,000 ``[``) raises
    RecursionError inside the json module; it is a bad line like any other, not a crash.
    """
    try:
        return json.loads(strip_bom(line))
    except json.JSONDecodeError as e:
        raise JsonLineError(f"{e.msg} at column {e.colno}") from None
    except RecursionError:
        raise JsonLineError(
            "nested too deeply to parse (beyond Python's recursion limit)"
        ) from None


def is_json_array(data: bytes) -> bool:
    """True when a file meant as JSON Lines holds one JSON array instead.

    Either its first non-blank line is a lone ``[`` (a pretty-printed array, even a truncated
    one), or the whole file parses as one array (``[{...}, {...}]`` on one or many lines).
    """
    body = strip_bom_bytes(data).lstrip()
    if not body.startswith(b"["):
        return False
    if body.split(b"\n", 1)[0].strip() == b"[":
        return True
    try:
        return isinstance(json.loads(body.decode("utf-8", "replace")), list)
    except (ValueError, RecursionError):
        return False


# ---------------------------------------------------------------------------------------------
# CSV


def csv_records(text: str, delimiter: str = ",") -> Iterator[tuple[int, Any, str | None]]:
    """(first line number, fields, None) per CSV record of `text`, or (line number, the raw
    line, why) for a line where a record the csv module cannot parse starts: that one line is
    given up and reading starts again on the next line, so a stray quote costs one row, not the
    rest of the file. Quoted fields may still span lines.
    """
    lines = io.StringIO(text, newline="").readlines()  # split at \n, \r\n, \r, endings kept
    start = 0
    while start < len(lines):
        # strict: a stray quote is an error, not a field that silently swallows the following rows
        reader = csv.reader(iter(lines[start:]), delimiter=delimiter, strict=True)
        done = 0  # lines consumed by the records read so far
        try:
            for row in reader:
                yield start + done + 1, row, None
                done = reader.line_num
            return
        except csv.Error as e:
            bad = start + done
            yield bad + 1, lines[bad], str(e)
            start = bad + 1


# ---------------------------------------------------------------------------------------------
# Control characters and invisible text

# ANSI terminal escapes: CSI (ESC [ ... final byte), OSC (ESC ] ... BEL or ESC \), two-byte ESC x
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]")
_LINE_BREAKING = re.compile(r"[\x0b\x0c]")  # vertical tab, form feed: page/line breaks in old texts
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # C0 (but tab, LF, CR), DEL, C1
# zero-width space, non-joiner, joiner; word joiner; BOM (zero-width no-break space)
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
_VISIBLE = re.compile(f"[^\\s{_INVISIBLE}]")
_ANY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # ESC (0x1b) included


def normalise_controls(text: str) -> tuple[str, int]:
    """(text without control characters, how many characters were removed or replaced).

    ANSI escape sequences are removed whole; vertical tab and form feed become a newline (they
    separate lines or pages); every other C0/C1 control character (NUL, BEL, backspace, ...)
    and DEL is removed. Tab, newline and carriage return are text and stay.
    """
    if not _ANY_CONTROL.search(text):  # the common case: one scan, nothing to do
        return text, 0
    changed = 0
    for pattern, replacement in ((_ANSI_ESCAPE, ""), (_LINE_BREAKING, "\n"), (_CONTROL, "")):
        text, n = _subn_count(pattern, replacement, text)
        changed += n
    return text, changed


def _subn_count(pattern: re.Pattern, replacement: str, text: str) -> tuple[str, int]:
    """Like `pattern.subn`, but counts the characters matched, not the matches."""
    count = 0

    def repl(m: re.Match) -> str:
        nonlocal count
        count += len(m.group())
        return replacement

    return pattern.sub(repl, text), count


def is_blank(text: str) -> bool:
    """True for text with nothing visible: empty, whitespace, zero-width characters only."""
    return _VISIBLE.search(text) is None
