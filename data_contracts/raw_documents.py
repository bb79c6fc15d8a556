"""raw_documents: every readable record of every source, before any filtering."""

from typing import Optional

import pandera.polars as pap
import pyarrow as pa

from data_contracts.base import Contract

NOT_BLANK = r"\S"  # at least one non-whitespace character


class RawDocuments(pap.DataFrameModel):
    doc_id: str = pap.Field(unique=True, str_length={"min_value": 1})
    source: str = pap.Field(str_length={"min_value": 1})
    domain: str
    url: Optional[str] = pap.Field(nullable=True)
    title: Optional[str] = pap.Field(nullable=True)
    text: str = pap.Field(str_contains=NOT_BLANK)
    factual: bool
    license: str
    location: str

    class Config:
        strict = True


SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.large_string(), nullable=False),
        pa.field("source", pa.large_string(), nullable=False),
        pa.field("domain", pa.large_string(), nullable=False),
        pa.field("url", pa.large_string(), nullable=True),
        pa.field("title", pa.large_string(), nullable=True),
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("factual", pa.bool_(), nullable=False),
        pa.field("license", pa.large_string(), nullable=False),
        pa.field("location", pa.large_string(), nullable=False),
    ]
)

CONTRACT = Contract(
    name="raw_documents",
    version="1.0",
    model=RawDocuments,
    schema=SCHEMA,
    description="One row per source record that could be read; `location` points into the file.",
)
