"""preference_pairs: binary comparisons of two responses to one prompt (RECIPE.md §5).

Each row is one annotated comparison: the prompt (system + turns ending with the user), the
chosen and rejected responses, the strength of the preference on the paper's four levels,
whether it is a helpfulness or a safety judgement, and the safety bin of the pair. Where the
responses came from (model variants, temperatures) and which weekly-style `batch` collected
them are kept so that the data mix and the held-out test split per batch can be rebuilt.
`chosen_ended` / `rejected_ended` say whether each response stopped at EOS (False: cut off at
the sampler's `max_new_tokens`); the reward models train on a cut-off response without EOS.
Responses people wrote count as ended.
"""

from typing import Optional

import pandera.polars as pap
import polars as pl
import pyarrow as pa

from data_contracts.base import Contract
from data_contracts.sft_dialogues import RISK_CATEGORIES, TURN, TURN_ARROW, ends_with_user

# §3.2.1, strongest first
RATINGS = ("significantly_better", "better", "slightly_better", "negligibly_better")
KINDS = ("helpfulness", "safety")
SAFETY_BINS = ("chosen_safe_rejected_unsafe", "both_safe", "both_unsafe")  # the excluded 4th:
# chosen unsafe, rejected safe (§3.2.1) never reaches this dataset
SPLITS = ("train", "test")


class PreferencePairs(pap.DataFrameModel):
    pair_id: str = pap.Field(unique=True, str_length={"min_value": 1})
    prompt_id: str = pap.Field(str_length={"min_value": 1})
    system: str
    prompt: pl.List(TURN)  # alternating turns that end with the user's
    chosen: str = pap.Field(str_length={"min_value": 1})
    rejected: str = pap.Field(str_length={"min_value": 1})
    rating: str = pap.Field(isin=list(RATINGS))
    kind: str = pap.Field(isin=list(KINDS))
    safety_bin: str = pap.Field(isin=list(SAFETY_BINS))
    chosen_safe: bool
    rejected_safe: bool
    chosen_score: Optional[float] = pap.Field(nullable=True)  # the annotator's quality score
    rejected_score: Optional[float] = pap.Field(nullable=True)
    is_safety: bool  # the prompt may elicit unsafe answers (adversarial or borderline)
    category: str
    risk_category: Optional[str] = pap.Field(nullable=True, isin=list(RISK_CATEGORIES))
    reference: Optional[str] = pap.Field(nullable=True)  # checkable answer, where known
    source: str = pap.Field(str_length={"min_value": 1})
    model_chosen: str
    model_rejected: str
    temperature_chosen: Optional[float] = pap.Field(nullable=True, ge=0)
    temperature_rejected: Optional[float] = pap.Field(nullable=True, ge=0)
    chosen_ended: bool  # stopped at EOS; False: cut off at max_new_tokens
    rejected_ended: bool
    batch: int = pap.Field(ge=0)
    split: str = pap.Field(isin=list(SPLITS))
    annotator: str = pap.Field(str_length={"min_value": 1})

    class Config:
        strict = True

    @pap.dataframe_check(error="prompt turns must alternate user/assistant and end with the user")
    def prompt_ends_with_user(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(ends_with_user(pl.col("prompt")))

    @pap.dataframe_check(error="safety_bin must agree with chosen_safe / rejected_safe")
    def bin_matches_labels(cls, data) -> pl.LazyFrame:
        c, r, b = pl.col("chosen_safe"), pl.col("rejected_safe"), pl.col("safety_bin")
        return data.lazyframe.select(
            ((b == "chosen_safe_rejected_unsafe") & c & ~r)
            | ((b == "both_safe") & c & r)
            | ((b == "both_unsafe") & ~c & ~r)
        )


SCHEMA = pa.schema(
    [
        pa.field("pair_id", pa.large_string(), nullable=False),
        pa.field("prompt_id", pa.large_string(), nullable=False),
        pa.field("system", pa.large_string(), nullable=False),
        pa.field("prompt", pa.large_list(TURN_ARROW), nullable=False),
        pa.field("chosen", pa.large_string(), nullable=False),
        pa.field("rejected", pa.large_string(), nullable=False),
        pa.field("rating", pa.large_string(), nullable=False),
        pa.field("kind", pa.large_string(), nullable=False),
        pa.field("safety_bin", pa.large_string(), nullable=False),
        pa.field("chosen_safe", pa.bool_(), nullable=False),
        pa.field("rejected_safe", pa.bool_(), nullable=False),
        pa.field("chosen_score", pa.float64(), nullable=True),
        pa.field("rejected_score", pa.float64(), nullable=True),
        pa.field("is_safety", pa.bool_(), nullable=False),
        pa.field("category", pa.large_string(), nullable=False),
        pa.field("risk_category", pa.large_string(), nullable=True),
        pa.field("reference", pa.large_string(), nullable=True),
        pa.field("source", pa.large_string(), nullable=False),
        pa.field("model_chosen", pa.large_string(), nullable=False),
        pa.field("model_rejected", pa.large_string(), nullable=False),
        pa.field("temperature_chosen", pa.float64(), nullable=True),
        pa.field("temperature_rejected", pa.float64(), nullable=True),
        pa.field("chosen_ended", pa.bool_(), nullable=False),
        pa.field("rejected_ended", pa.bool_(), nullable=False),
        pa.field("batch", pa.int64(), nullable=False),
        pa.field("split", pa.large_string(), nullable=False),
        pa.field("annotator", pa.large_string(), nullable=False),
    ]
)

CONTRACT = Contract(
    name="preference_pairs",
    version="1.1",
    model=PreferencePairs,
    schema=SCHEMA,
    description="Annotated comparisons: prompt, chosen, rejected, rating level, kind, safety bin, "
    "model variants, temperatures, whether each response ended at EOS, batch, split.",
)
