"""Contract machinery: a pandera (polars) model, the explicit pyarrow schema, a version.

A `Contract` validates a polars DataFrame *lazily* (every failure at once) and raises a
`ContractError` that names the dataset, each failing column and rule, how many rows fail and
example rows. `split_valid` separates rows that break row-level rules (so ingestion can
quarantine them) from structural failures (missing or extra columns, wrong dtypes), which no
row can be blamed for and which always raise.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandera.polars as pap
import polars as pl
import pyarrow as pa
from pandera.errors import SchemaError, SchemaErrors

ROW_INDEX = "__row__"
MAX_EXAMPLES = 5


class ContractError(ValueError):
    """Data does not satisfy its contract. `failures` is one dict per (column, check)."""

    def __init__(self, dataset: str, failures: list[dict], where: str = ""):
        self.dataset = dataset
        self.failures = failures
        lines = [f"dataset '{dataset}'{' (' + where + ')' if where else ''} breaks its contract:"]
        for f in failures:
            rows = f"{f['rows']} row(s)" if f["rows"] is not None else "schema"
            lines.append(f"  - column '{f['column']}': {f['check']} [{rows}]")
            for ex in f["examples"]:
                lines.append(f"      e.g. {ex}")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Contract:
    """One dataset's contract. Bump `version` on any change to `model` or `schema`."""

    name: str
    version: str
    model: type[pap.DataFrameModel]
    schema: pa.Schema
    description: str

    # -- validation -------------------------------------------------------------------------
    def validate(self, df: pl.DataFrame, where: str = "") -> pl.DataFrame:
        """`df` with its columns in contract order, or `ContractError` listing every failure."""
        df = self._conform(df, where)
        try:
            self.model.validate(df, lazy=True)
        except (SchemaErrors, SchemaError) as exc:
            raise ContractError(self.name, _failures(_failure_cases(exc)), where) from None
        return df

    def split_valid(self, df: pl.DataFrame, where: str = "") -> tuple[pl.DataFrame, pl.DataFrame]:
        """Split into (valid rows, invalid rows + `contract_error` column).

        Structural problems raise; row-level rule failures (nulls, ranges, lengths, uniqueness)
        put the row aside with every rule it breaks, so nothing is dropped silently.
        """
        df = self._conform(df, where)
        try:
            self.model.validate(df, lazy=True)
            return df, df.clear().with_columns(pl.lit("").alias("contract_error"))
        except (SchemaErrors, SchemaError) as exc:
            cases = _failure_cases(exc)
        rows = _first_occurrences_pass(df, cases.filter(pl.col("index").is_not_null()))
        if rows.height == 0:  # a dataframe-level failure no row can carry
            raise ContractError(self.name, _failures(cases), where)
        reasons = (
            rows.group_by("index")
            .agg(pl.format("{} failed {}", "column", "check").unique().sort().str.join("; "))
            .rename({"index": ROW_INDEX, "column": "contract_error"})
            .with_columns(pl.col(ROW_INDEX).cast(pl.UInt32))
        )
        indexed = df.with_row_index(ROW_INDEX).join(reasons, on=ROW_INDEX, how="left")
        valid = indexed.filter(pl.col("contract_error").is_null()).drop(ROW_INDEX, "contract_error")
        invalid = indexed.filter(pl.col("contract_error").is_not_null()).drop(ROW_INDEX)
        return valid, invalid

    def to_arrow(self, df: pl.DataFrame) -> pa.Table:
        """The frame as an Arrow table with exactly the contract's schema (types and order)."""
        return df.select(self.schema.names).to_arrow().cast(self.schema)

    # -- helpers ----------------------------------------------------------------------------
    def _conform(self, df: pl.DataFrame, where: str) -> pl.DataFrame:
        """Check columns and dtypes, order columns as the contract does.

        Lossless casts are applied (an all-null column of dtype Null, e.g. when no source had
        a title; integer and float widening); anything else is a contract failure.
        """
        self._check_structure(df, where)
        casts = [
            pl.col(f.name).cast(_polars_dtype(f), strict=True)
            for f in self.schema
            if df.schema[f.name] != _polars_dtype(f)
        ]
        return df.select(self.schema.names).with_columns(casts)

    def _check_structure(self, df: pl.DataFrame, where: str) -> None:
        expected = self.schema.names
        failures = []
        missing = [c for c in expected if c not in df.columns]
        extra = [c for c in df.columns if c not in expected]
        for c in missing:
            failures.append(_failure(c, "column is missing", None, []))
        for c in extra:
            failures.append(_failure(c, "column is not in the contract", None, []))
        for field in self.schema:
            if field.name in df.columns:
                want = _polars_dtype(field)
                got = df.schema[field.name]
                if got != want and not _safe_cast(got, want, field.nullable):
                    failures.append(
                        _failure(field.name, f"dtype is {got}, expected {want}", None, [])
                    )
        if failures:
            raise ContractError(self.name, failures, where)


def _failures(cases: pl.DataFrame) -> list[dict]:
    """One entry per (column, check): how many rows fail and up to MAX_EXAMPLES of them."""
    out = []
    for (column, check), group in cases.group_by(["column", "check"], maintain_order=True):
        idx = [i for i in group["index"].to_list() if i is not None]
        values = group["failure_case"].to_list()[:MAX_EXAMPLES]
        if idx:
            examples = [{"row": i, "value": _short(v)} for i, v in zip(idx[:MAX_EXAMPLES], values)]
        else:
            examples = [_short(v) for v in values]
        out.append(_failure(column, check, len(idx) if idx else None, examples))
    return out


def _polars_dtype(field: pa.Field) -> pl.DataType:
    return pl.from_arrow(pa.table({field.name: pa.array([], field.type)})).dtypes[0]


def _safe_cast(got: pl.DataType, want: pl.DataType, nullable: bool) -> bool:
    """Casts that cannot change a value: all-null columns, integer and float widening."""
    if got == pl.Null:
        return nullable
    if got.is_integer() and want.is_integer():
        got_bits, want_bits = _bits(got), _bits(want)
        if got.is_unsigned_integer() and want.is_signed_integer():
            return want_bits > got_bits  # UInt32 -> Int64 fits, UInt64 -> Int64 may not
        return got.is_signed_integer() == want.is_signed_integer() and want_bits >= got_bits
    return got == pl.Float32 and want == pl.Float64


def _bits(dtype: pl.DataType) -> int:
    return int("".join(ch for ch in str(dtype) if ch.isdigit()))


def _first_occurrences_pass(df: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """Uniqueness failures flag every copy; the first occurrence of a value is valid."""
    unique_fail = pl.col("check") == "field_uniqueness"
    later_copies = pl.concat(
        [
            df.select(pl.int_range(pl.len()).alias("index"), pl.lit(column).alias("column"))
            .filter(~df[column].is_first_distinct())
            .with_columns(pl.col("index").cast(pl.Int32))
            for column in rows.filter(unique_fail)["column"].unique().to_list()
        ]
        or [pl.DataFrame(schema={"index": pl.Int32, "column": pl.Utf8})]
    )
    dups = rows.filter(unique_fail).join(later_copies, on=["index", "column"], how="semi")
    return pl.concat([rows.filter(~unique_fail), dups])


def _failure(column: str, check: str, rows: int | None, examples: list) -> dict:
    return {"column": column, "check": check, "rows": rows, "examples": examples}


def _failure_cases(exc: Exception) -> pl.DataFrame:
    if isinstance(exc, SchemaErrors):
        cases = exc.failure_cases
    else:  # a single SchemaError (non-lazy path): build the same shape
        fc = getattr(exc, "failure_cases", None)
        values = fc["failure_case"].to_list() if isinstance(fc, pl.DataFrame) else [str(exc)]
        cases = pl.DataFrame({"failure_case": [str(v) for v in values]}).with_columns(
            pl.lit(getattr(getattr(exc, "schema", None), "name", None) or "?").alias("column"),
            pl.lit(str(getattr(exc, "check", exc))).alias("check"),
            pl.lit(None, pl.Int32).alias("index"),
        )
    return cases.with_columns(
        pl.col("column").cast(pl.Utf8).fill_null("?"), pl.col("check").cast(pl.Utf8)
    )


def _short(value, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
