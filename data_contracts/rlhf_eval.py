"""rlhf_eval: each model version's answer to each held-out prompt, scored (RECIPE.md §7).

One row per (version, prompt): the greedy answer, both reward models' sigmoid scores and R_c
(all versions scored by the same, final reward models), the mean per-token KL to the SFT model
along the answer, the rule annotator's score on the prompt's own axis (helpfulness or safety;
a stand-in for people) and its verdict against the SFT model's answer to the same prompt.
"""

from typing import Optional

import pandera.polars as pap
import polars as pl
import pyarrow as pa

from data_contracts.base import Contract
from data_contracts.sft_dialogues import RISK_CATEGORIES

KINDS = ("helpfulness", "safety")


class RlhfEval(pap.DataFrameModel):
    version: str = pap.Field(str_length={"min_value": 1})  # "sft", "rlhf-v1", ...
    order: int = pap.Field(ge=0)  # 0 = SFT, r = RLHF-V<r>
    prompt_id: str = pap.Field(str_length={"min_value": 1})
    kind: str = pap.Field(isin=list(KINDS))
    category: str
    risk_category: Optional[str] = pap.Field(nullable=True, isin=list(RISK_CATEGORIES))
    answer: str
    r_h: float = pap.Field(ge=0, le=1)
    r_s: float = pap.Field(ge=0, le=1)
    r_c: float = pap.Field(ge=0, le=1)
    kl_to_sft: float = pap.Field(
        ge=0, nullable=True
    )  # null for an empty answer (no token to average)
    annotator_score: float = pap.Field(ge=0, le=1)
    win_vs_sft: float = pap.Field(isin=[0.0, 0.5, 1.0])  # 1 win, 0.5 tie, 0 loss (annotator)

    class Config:
        strict = True

    @pap.dataframe_check(error="each (version, prompt_id) appears once")
    def one_row_per_version_and_prompt(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.len().over(["version", "prompt_id"]) == 1)


SCHEMA = pa.schema(
    [
        pa.field("version", pa.large_string(), nullable=False),
        pa.field("order", pa.int64(), nullable=False),
        pa.field("prompt_id", pa.large_string(), nullable=False),
        pa.field("kind", pa.large_string(), nullable=False),
        pa.field("category", pa.large_string(), nullable=False),
        pa.field("risk_category", pa.large_string(), nullable=True),
        pa.field("answer", pa.large_string(), nullable=False),
        pa.field("r_h", pa.float64(), nullable=False),
        pa.field("r_s", pa.float64(), nullable=False),
        pa.field("r_c", pa.float64(), nullable=False),
        pa.field("kl_to_sft", pa.float64(), nullable=True),
        pa.field("annotator_score", pa.float64(), nullable=False),
        pa.field("win_vs_sft", pa.float64(), nullable=False),
    ]
)

CONTRACT = Contract(
    name="rlhf_eval",
    version="1.0",
    model=RlhfEval,
    schema=SCHEMA,
    description=(
        "Held-out answers per model version: R_h, R_s, R_c, KL to SFT, annotator score and win "
        "vs SFT."
    ),
)
