"""tokenizer_eval: compression of the trained tokenizer per source."""

import pandera.polars as pap
import pyarrow as pa

from data_contracts.base import Contract


class TokenizerEval(pap.DataFrameModel):
    source: str = pap.Field(unique=True)
    docs: int = pap.Field(ge=0)
    bytes: int = pap.Field(ge=0)
    tokens: int = pap.Field(ge=0)
    bytes_per_token: float = pap.Field(ge=0.0)
    roundtrip_failures: int = pap.Field(ge=0)  # documents where decode(encode(text)) != text

    class Config:
        strict = True


SCHEMA = pa.schema(
    [
        pa.field("source", pa.large_string(), nullable=False),
        pa.field("docs", pa.int64(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("tokens", pa.int64(), nullable=False),
        pa.field("bytes_per_token", pa.float64(), nullable=False),
        pa.field("roundtrip_failures", pa.int64(), nullable=False),
    ]
)

CONTRACT = Contract(
    name="tokenizer_eval",
    version="1.0",
    model=TokenizerEval,
    schema=SCHEMA,
    description="Bytes per token of the trained tokenizer, per source.",
)
