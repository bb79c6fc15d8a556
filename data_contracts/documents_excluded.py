"""documents_excluded: every document a corpus filter dropped, with the rule that dropped it."""

import pandera.polars as pap
import pyarrow as pa

from data_contracts.base import Contract
from data_contracts.raw_documents import SCHEMA as RAW_SCHEMA
from data_contracts.raw_documents import RawDocuments


class DocumentsExcluded(RawDocuments):
    stage: str = pap.Field(str_length={"min_value": 1})  # the filter step, e.g. "quality"
    reason: str = pap.Field(str_matches=r"^[a-z]+_[a-z0-9_]+$")  # <filter>_<rule>
    detail: str

    class Config:
        strict = True


SCHEMA = (
    RAW_SCHEMA.append(pa.field("stage", pa.large_string(), nullable=False))
    .append(pa.field("reason", pa.large_string(), nullable=False))
    .append(pa.field("detail", pa.large_string(), nullable=False))
)

CONTRACT = Contract(
    name="documents_excluded",
    version="1.0",
    model=DocumentsExcluded,
    schema=SCHEMA,
    description="Dropped documents with the step, reason code (<filter>_<rule>) and a detail.",
)
