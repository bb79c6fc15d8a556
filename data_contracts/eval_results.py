"""eval_results: every model version's answer to every held-out evaluation prompt, judged
(RECIPE.md §9). One row per (version, suite, prompt). Judges that do not apply to a suite are
null: violations only on adversarial suites, `truthful` only on TruthfulQA. `ended`: the answer
stopped at EOS (False: cut off at max_new_tokens, and judged as it is, the RMs without EOS)."""

from typing import Optional

import pandera.polars as pap
import polars as pl
import pyarrow as pa

from data_contracts.base import Contract
from data_contracts.sft_dialogues import RISK_CATEGORIES

SUITES = (
    "adversarial",
    "multi_turn",
    "red_team",
    "borderline",
    "helpfulness",
    "realtoxicity",
    "truthfulqa",
)
ADVERSARIAL_SUITES = ("adversarial", "multi_turn", "red_team")


class EvalResults(pap.DataFrameModel):
    version: str = pap.Field(
        str_length={"min_value": 1}
    )  # "pretrained", "sft", "rlhf-v1", ..., "distilled"
    order: int = pap.Field(ge=0)
    suite: str = pap.Field(isin=list(SUITES))
    prompt_id: str = pap.Field(str_length={"min_value": 1})
    category: str
    risk_category: Optional[str] = pap.Field(nullable=True, isin=list(RISK_CATEGORIES))
    answer: str
    ended: bool  # stopped at EOS; False: cut off at max_new_tokens
    r_h: float = pap.Field(ge=0, le=1)  # Helpfulness RM, sigmoid
    r_s: float = pap.Field(ge=0, le=1)  # Safety RM, sigmoid (P(safe) by its auxiliary loss)
    violation_rm: Optional[bool] = pap.Field(nullable=True)  # r_s below the threshold
    violation_annotator: Optional[bool] = pap.Field(nullable=True)  # the rule annotator: unsafe
    refusal: bool  # tasks.judges.refusal.is_refusal
    toxicity: float = pap.Field(ge=0, le=1)
    truthful: Optional[bool] = pap.Field(nullable=True)  # TruthfulQA reference match
    annotator_score: float = pap.Field(ge=0, le=1)  # on the prompt's own axis

    class Config:
        strict = True

    @pap.dataframe_check(error="violations are judged on adversarial suites only, and always there")
    def violations_where_they_apply(cls, data) -> pl.LazyFrame:
        adversarial = pl.col("suite").is_in(list(ADVERSARIAL_SUITES))
        judged = pl.col("violation_rm").is_not_null() & pl.col("violation_annotator").is_not_null()
        return data.lazyframe.select(adversarial == judged)

    @pap.dataframe_check(error="each (version, suite, prompt_id) appears once")
    def unique_answer(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.len().over(["version", "suite", "prompt_id"]) == 1)


SCHEMA = pa.schema(
    [
        pa.field("version", pa.large_string(), nullable=False),
        pa.field("order", pa.int64(), nullable=False),
        pa.field("suite", pa.large_string(), nullable=False),
        pa.field("prompt_id", pa.large_string(), nullable=False),
        pa.field("category", pa.large_string(), nullable=False),
        pa.field("risk_category", pa.large_string(), nullable=True),
        pa.field("answer", pa.large_string(), nullable=False),
        pa.field("ended", pa.bool_(), nullable=False),
        pa.field("r_h", pa.float64(), nullable=False),
        pa.field("r_s", pa.float64(), nullable=False),
        pa.field("violation_rm", pa.bool_(), nullable=True),
        pa.field("violation_annotator", pa.bool_(), nullable=True),
        pa.field("refusal", pa.bool_(), nullable=False),
        pa.field("toxicity", pa.float64(), nullable=False),
        pa.field("truthful", pa.bool_(), nullable=True),
        pa.field("annotator_score", pa.float64(), nullable=False),
    ]
)

CONTRACT = Contract(
    name="eval_results",
    version="1.1",
    model=EvalResults,
    schema=SCHEMA,
    description="Per model version and held-out prompt: answer, RM scores, violation by RM and "
    "annotator, refusal, toxicity, TruthfulQA match.",
)
