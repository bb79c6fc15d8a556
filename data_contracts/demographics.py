"""demographics: pronoun and identity-term representation in the kept corpus (§4.1, Table 9)."""

import pandera.polars as pap
import pyarrow as pa

from data_contracts.base import Contract


class Demographics(pap.DataFrameModel):
    axis: str
    term: str
    docs: int = pap.Field(ge=0)
    pct_docs: float = pap.Field(ge=0.0, le=100.0)

    class Config:
        strict = True


SCHEMA = pa.schema(
    [
        pa.field("axis", pa.large_string(), nullable=False),
        pa.field("term", pa.large_string(), nullable=False),
        pa.field("docs", pa.int64(), nullable=False),
        pa.field("pct_docs", pa.float64(), nullable=False),
    ]
)

CONTRACT = Contract(
    name="demographics",
    version="1.0",
    model=Demographics,
    schema=SCHEMA,
    description="Documents mentioning each pronoun group / identity term, count and percent.",
)
