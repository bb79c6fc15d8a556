"""rejection_samples: the K responses per prompt of one rejection-sampling round (RECIPE.md §7).

Each row is one response to a prompt with both reward models' sigmoid scores (the round's
refreshed RMs) and the gated reward R_c that ranks them. Rows with `origin_round == round` are
the K samples drawn from the round's starting policy (Fig. 7 reads these); from round
`rs_pool_from` on, each prompt's best samples of the earlier rounds join as rows with their
`origin_round`, re-scored by this round's RMs (the paper's V4 rule). `is_best` marks the one
row per prompt the round fine-tunes on: the highest R_c among its rows that `ended` at EOS (a
response cut off at max_new_tokens is scored without EOS and never picked while an ended one
exists; when all of a prompt's rows were cut off, the best of them, counted and logged).
"""

from typing import Optional

import pandera.polars as pap
import polars as pl
import pyarrow as pa

from data_contracts.base import Contract
from data_contracts.sft_dialogues import RISK_CATEGORIES, TURN, TURN_ARROW, ends_with_user


class RejectionSamples(pap.DataFrameModel):
    round: int = pap.Field(ge=1)  # RLHF-V<round>
    prompt_id: str = pap.Field(str_length={"min_value": 1})
    system: str
    prompt: pl.List(TURN)  # alternating turns that end with the user's
    is_safety: bool
    category: str
    risk_category: Optional[str] = pap.Field(nullable=True, isin=list(RISK_CATEGORIES))
    reference: Optional[str] = pap.Field(nullable=True)
    sample: int = pap.Field(
        ge=0
    )  # 0..K-1 within origin_round, in draw order (Fig. 7 takes the first N)
    response: str
    ended: bool  # stopped at EOS; False: cut off at max_new_tokens
    temperature: float = pap.Field(ge=0)
    r_h: float = pap.Field(ge=0, le=1)  # Helpfulness RM, sigmoid
    r_s: float = pap.Field(ge=0, le=1)  # Safety RM, sigmoid
    r_c: float = pap.Field(ge=0, le=1)  # the gated reward (models/ppo.py gated_reward)
    origin_round: int = pap.Field(ge=1)  # the round whose policy drew it (<= round)
    is_best: bool

    class Config:
        strict = True

    @pap.dataframe_check(error="prompt turns must alternate user/assistant and end with the user")
    def prompt_ends_with_user(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(ends_with_user(pl.col("prompt")))

    @pap.dataframe_check(error="r_c must equal r_s or r_h")
    def r_c_is_one_of_the_scores(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("r_c") == pl.col("r_s")) | (pl.col("r_c") == pl.col("r_h"))
        )

    @pap.dataframe_check(
        error="each (round, prompt_id) has exactly one best sample, an ended one when any ended"
    )
    def one_best_per_prompt(cls, data) -> pl.LazyFrame:
        group = ["round", "prompt_id"]
        best = pl.col("is_best").cast(pl.Int64).sum().over(group)
        any_ended = pl.col("ended").any().over(group)
        return data.lazyframe.select(
            (best == 1) & (pl.col("ended") | ~pl.col("is_best") | ~any_ended)
        )

    @pap.dataframe_check(error="origin_round cannot be later than round")
    def origin_not_later(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("origin_round") <= pl.col("round"))

    @pap.dataframe_check(error="(round, prompt_id, origin_round, sample) is unique")
    def unique_sample(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.len().over(["round", "prompt_id", "origin_round", "sample"]) == 1
        )


SCHEMA = pa.schema(
    [
        pa.field("round", pa.int64(), nullable=False),
        pa.field("prompt_id", pa.large_string(), nullable=False),
        pa.field("system", pa.large_string(), nullable=False),
        pa.field("prompt", pa.large_list(TURN_ARROW), nullable=False),
        pa.field("is_safety", pa.bool_(), nullable=False),
        pa.field("category", pa.large_string(), nullable=False),
        pa.field("risk_category", pa.large_string(), nullable=True),
        pa.field("reference", pa.large_string(), nullable=True),
        pa.field("sample", pa.int64(), nullable=False),
        pa.field("response", pa.large_string(), nullable=False),
        pa.field("ended", pa.bool_(), nullable=False),
        pa.field("temperature", pa.float64(), nullable=False),
        pa.field("r_h", pa.float64(), nullable=False),
        pa.field("r_s", pa.float64(), nullable=False),
        pa.field("r_c", pa.float64(), nullable=False),
        pa.field("origin_round", pa.int64(), nullable=False),
        pa.field("is_best", pa.bool_(), nullable=False),
    ]
)

CONTRACT = Contract(
    name="rejection_samples",
    version="1.1",
    model=RejectionSamples,
    schema=SCHEMA,
    description=(
        "K samples per prompt per RLHF round (plus pooled earlier bests) with R_h, R_s, R_c and "
        "the best."
    ),
)
