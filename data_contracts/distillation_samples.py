"""distillation_samples: safety context distillation candidates (RECIPE.md §9, paper §4.2.4).

One row per adversarial train prompt: the answer the policy gave with a safety preprompt in
front of its system prompt and the answer without it, both scored by the Safety RM on the prompt
*without* the preprompt. `kept` rows are the ones fine-tuned on (prompt without preprompt ->
the preprompted answer): only where the preprompted answer scored higher; the others carry the
reason they were dropped. `ended_with` / `ended_without`: whether each answer stopped at EOS
(False: cut off at max_new_tokens, scored without EOS); a cut-off preprompted answer is never a
fine-tuning target (reason `cut_off`), and with `distill.max_per_answer` a kept answer text is
kept at most that many times (the others: reason `repeated_answer`). `trimmed_with`: with
`distill.trim_cut_off`, the preprompted answer was cut off and is stored, scored and judged cut
back to its last complete sentence (so `ended_with` is True).
"""

from typing import Optional

import pandera.polars as pap
import polars as pl
import pyarrow as pa

from data_contracts.base import Contract
from data_contracts.sft_dialogues import RISK_CATEGORIES, TURN, TURN_ARROW, ends_with_user

PREPROMPT_KINDS = ("generic", "template")
DROP_REASONS = ("not_better", "empty_answer", "cut_off", "repeated_answer")


class DistillationSamples(pap.DataFrameModel):
    prompt_id: str = pap.Field(unique=True, str_length={"min_value": 1})
    system: str  # the prompt's own system prompt (no preprompt)
    prompt: pl.List(TURN)  # alternating turns that end with the user's
    risk_category: Optional[str] = pap.Field(nullable=True, isin=list(RISK_CATEGORIES))
    preprompt_kind: str = pap.Field(isin=list(PREPROMPT_KINDS))
    preprompt: str = pap.Field(str_length={"min_value": 1})
    answer_with: str  # generated with the preprompt
    answer_without: str  # generated without it
    ended_with: bool  # the preprompted answer stopped at EOS (False: cut off)
    ended_without: bool
    trimmed_with: bool  # cut off, then cut back to its last complete sentence (trim_cut_off)
    score_with: float = pap.Field(ge=0, le=1)  # Safety RM, sigmoid, prompt without the preprompt
    score_without: float = pap.Field(ge=0, le=1)
    delta: float
    kept: bool
    reason: Optional[str] = pap.Field(nullable=True, isin=list(DROP_REASONS))

    class Config:
        strict = True

    @pap.dataframe_check(error="prompt turns must alternate user/assistant and end with the user")
    def prompt_ends_with_user(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(ends_with_user(pl.col("prompt")))

    @pap.dataframe_check(error="a trimmed preprompted answer counts as ended")
    def trimmed_rows_ended(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(~pl.col("trimmed_with") | pl.col("ended_with"))

    @pap.dataframe_check(
        error="a kept row has no reason, ended and scored higher; a dropped row has a reason"
    )
    def kept_rows_improved(cls, data) -> pl.LazyFrame:
        kept, reason = pl.col("kept"), pl.col("reason")
        return data.lazyframe.select(
            (
                kept
                & reason.is_null()
                & (pl.col("score_with") > pl.col("score_without"))
                & pl.col("ended_with")
            )
            | (~kept & reason.is_not_null())
        )


SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.large_string(), nullable=False),
        pa.field("system", pa.large_string(), nullable=False),
        pa.field("prompt", pa.large_list(TURN_ARROW), nullable=False),
        pa.field("risk_category", pa.large_string(), nullable=True),
        pa.field("preprompt_kind", pa.large_string(), nullable=False),
        pa.field("preprompt", pa.large_string(), nullable=False),
        pa.field("answer_with", pa.large_string(), nullable=False),
        pa.field("answer_without", pa.large_string(), nullable=False),
        pa.field("ended_with", pa.bool_(), nullable=False),
        pa.field("ended_without", pa.bool_(), nullable=False),
        pa.field("trimmed_with", pa.bool_(), nullable=False),
        pa.field("score_with", pa.float64(), nullable=False),
        pa.field("score_without", pa.float64(), nullable=False),
        pa.field("delta", pa.float64(), nullable=False),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("reason", pa.large_string(), nullable=True),
    ]
)

CONTRACT = Contract(
    name="distillation_samples",
    version="1.3",
    model=DistillationSamples,
    schema=SCHEMA,
    description=(
        "Safety context distillation: answers with and without a safety preprompt, Safety RM "
        "scores, kept only where the preprompt helped."
    ),
)
