"""sft_examples: one tokenised dialogue per row, in the Llama 2 chat format, with its labels.

`labels[i]` is `tokens[i]` where token i is trained as a target and IGNORE_INDEX (-100, one
named constant in models/llama.py) where it is not; the model shifts them itself. Packing
several examples into one training sequence happens at training time (tasks/chat/format.py).
"""

import pandera.polars as pap
import polars as pl
import pyarrow as pa

from data_contracts.base import Contract
from data_contracts.sft_dialogues import SPLITS


class SftExamples(pap.DataFrameModel):
    dialogue_id: str = pap.Field(unique=True, str_length={"min_value": 1})
    source: str = pap.Field(str_length={"min_value": 1})
    category: str
    split: str = pap.Field(isin=list(SPLITS))
    tokens: pl.List(pl.Int32)
    labels: pl.List(pl.Int32)
    n_tokens: int = pap.Field(gt=0)
    n_targets: int = pap.Field(gt=0)  # an example with nothing to learn is excluded, not kept

    class Config:
        strict = True

    @pap.dataframe_check(error="tokens, labels and n_tokens must agree in length")
    def lengths_agree(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("tokens").list.len() == pl.col("n_tokens"))
            & (pl.col("labels").list.len() == pl.col("n_tokens"))
        )


SCHEMA = pa.schema(
    [
        pa.field("dialogue_id", pa.large_string(), nullable=False),
        pa.field("source", pa.large_string(), nullable=False),
        pa.field("category", pa.large_string(), nullable=False),
        pa.field("split", pa.large_string(), nullable=False),
        pa.field("tokens", pa.large_list(pa.int32()), nullable=False),
        pa.field("labels", pa.large_list(pa.int32()), nullable=False),
        pa.field("n_tokens", pa.int64(), nullable=False),
        pa.field("n_targets", pa.int64(), nullable=False),
    ]
)

CONTRACT = Contract(
    name="sft_examples",
    version="1.0",
    model=SftExamples,
    schema=SCHEMA,
    description="Tokenised chat-format dialogues, per-token labels (IGNORE_INDEX where masked).",
)
