"""Progress bars for long loops, shown only when a person watches a terminal.

In a worker, a CI log or a test, `progress()` returns the iterable untouched, so logs stay
clean; on a terminal it draws a rich progress bar on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("RECIPE_NO_PROGRESS") is None


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if not interactive():
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True)
