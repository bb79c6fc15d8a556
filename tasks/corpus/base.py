"""Shared shapes for corpus filters: pure code, no Prefect or MLflow imports.

Every filter takes a polars DataFrame of documents and returns a `FilterResult`:
the kept rows, the dropped rows with a `reason` (``<filter>_<rule>``) and a human
readable `detail`, and a flat dict of stats for the caller to log. Rows are never
lost: ``len(kept) + len(excluded) == len(input)`` is checked by `FilterResult.check`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from tasks.records import DOC_ID, SOURCE, TEXT  # noqa: F401  (the corpus's column names)

# Columns every document frame carries (see data_contracts/documents.py).
REASON, DETAIL = "reason", "detail"


@dataclass
class FilterResult:
    kept: pl.DataFrame
    excluded: pl.DataFrame  # input columns + reason (str) + detail (str)
    stats: dict[str, float] = field(default_factory=dict)

    def check(self, n_in: int, name: str) -> "FilterResult":
        n_out = self.kept.height + self.excluded.height
        if n_out != n_in:
            raise AssertionError(f"{name}: {n_in} rows in but {n_out} out (kept+excluded)")
        return self


def split_by_reason(df: pl.DataFrame, reason: pl.Expr, detail: pl.Expr) -> FilterResult:
    """Split `df` on a reason expression: null reason = kept, otherwise excluded.

    `reason` evaluates to the first failing rule's code (or null), `detail` to the
    explanation shown next to it. Stats count rows per reason as ``dropped_<reason>``.
    """
    tagged = df.with_columns(reason.alias(REASON), detail.alias(DETAIL))
    kept = tagged.filter(pl.col(REASON).is_null()).drop(REASON, DETAIL)
    excluded = tagged.filter(pl.col(REASON).is_not_null())
    stats = {f"dropped_{r}": float(n) for r, n in excluded.group_by(REASON).len().iter_rows()}
    stats["kept"] = float(kept.height)
    stats["excluded"] = float(excluded.height)
    return FilterResult(kept, excluded.with_columns(pl.col(DETAIL).fill_null("")), stats)
