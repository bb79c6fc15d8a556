"""quarantine: input rows that could not be read or broke a contract, with the error."""

import pandera.polars as pap
import pyarrow as pa

from data_contracts.base import Contract


class Quarantine(pap.DataFrameModel):
    source: str
    location: str = pap.Field(str_length={"min_value": 1})  # file (and row/line) of the bad input
    stage: str = pap.Field(str_length={"min_value": 1})
    error: str = pap.Field(str_length={"min_value": 1})
    payload: str  # the raw input, truncated, so a person can fix it

    class Config:
        strict = True


SCHEMA = pa.schema(
    [
        pa.field("source", pa.large_string(), nullable=False),
        pa.field("location", pa.large_string(), nullable=False),
        pa.field("stage", pa.large_string(), nullable=False),
        pa.field("error", pa.large_string(), nullable=False),
        pa.field("payload", pa.large_string(), nullable=False),
    ]
)

CONTRACT = Contract(
    name="quarantine",
    version="1.0",
    model=Quarantine,
    schema=SCHEMA,
    description="Rows set aside at ingestion: where they came from and why.",
)
