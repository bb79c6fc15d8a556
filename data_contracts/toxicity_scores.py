"""toxicity_scores: the measured sample (paper §4.1: 10 % of documents, mean of line scores)."""

import pandera.polars as pap
import pyarrow as pa

from data_contracts.base import Contract


class ToxicityScores(pap.DataFrameModel):
    doc_id: str = pap.Field(unique=True)
    source: str
    n_lines: int = pap.Field(ge=0)
    score: float = pap.Field(ge=0.0, le=1.0)
    toxic: bool

    class Config:
        strict = True


SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.large_string(), nullable=False),
        pa.field("source", pa.large_string(), nullable=False),
        pa.field("n_lines", pa.int64(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("toxic", pa.bool_(), nullable=False),
    ]
)

CONTRACT = Contract(
    name="toxicity_scores",
    version="1.0",
    model=ToxicityScores,
    schema=SCHEMA,
    description=(
        "Document toxicity (mean of line probabilities) on a seeded sample; toxic = score >= "
        "threshold."
    ),
)
