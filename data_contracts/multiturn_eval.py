"""multiturn_eval: multi-turn instruction consistency (Table 30), one row per model and turn."""

import pandera.polars as pap
import pyarrow as pa

from data_contracts.base import Contract


class MultiturnEval(pap.DataFrameModel):
    model: str = pap.Field(str_length={"min_value": 1})  # e.g. "sft (no GAtt)", "sft + GAtt"
    turn: int = pap.Field(ge=1)
    evaluated: int = pap.Field(ge=0)  # conversations that reached this turn within the context
    satisfied: int = pap.Field(ge=0)  # ... whose answer still follows the first-turn instruction
    recall: float = pap.Field(ge=0, le=1, nullable=True)  # satisfied / evaluated (null if none)

    class Config:
        strict = True

    @pap.dataframe_check(error="satisfied cannot exceed evaluated")
    def satisfied_le_evaluated(cls, data):
        import polars as pl

        return data.lazyframe.select(pl.col("satisfied") <= pl.col("evaluated"))


SCHEMA = pa.schema(
    [
        pa.field("model", pa.large_string(), nullable=False),
        pa.field("turn", pa.int64(), nullable=False),
        pa.field("evaluated", pa.int64(), nullable=False),
        pa.field("satisfied", pa.int64(), nullable=False),
        pa.field("recall", pa.float64(), nullable=True),
    ]
)

CONTRACT = Contract(
    name="multiturn_eval",
    version="1.0",
    model=MultiturnEval,
    schema=SCHEMA,
    description="Share of answers at each turn that still satisfy the first-turn instruction.",
)
