"""documents: the kept corpus after dedup, PII and quality filters, PII redacted, with weights."""

import pandera.polars as pap
import pyarrow as pa

from data_contracts.base import Contract
from data_contracts.raw_documents import SCHEMA as RAW_SCHEMA
from data_contracts.raw_documents import RawDocuments


class Documents(RawDocuments):
    # How often this document is drawn relative to others (factual sources up-sampled, §2.1).
    sample_weight: float = pap.Field(gt=0)

    class Config:
        strict = True


SCHEMA = RAW_SCHEMA.append(pa.field("sample_weight", pa.float64(), nullable=False))

CONTRACT = Contract(
    name="documents",
    version="1.0",
    model=Documents,
    schema=SCHEMA,
    description="Kept documents, text with PII redacted, plus the sampling weight of their source.",
)
