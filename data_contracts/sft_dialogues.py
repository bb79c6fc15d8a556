"""sft_dialogues: supervised fine-tuning dialogues in one shape, whatever their source.

A dialogue is an optional system prompt and alternating user/assistant turns that start with
the user and end with the assistant (RECIPE.md §4). Safety demonstrations carry `is_safety`
and one of the paper's three risk categories; task dialogues carry the `reference` answer to
their last user turn, so helpfulness can be checked by code later.
"""

from typing import Optional

import pandera.polars as pap
import polars as pl
import pyarrow as pa

from data_contracts.base import Contract

TURN = pl.Struct({"role": pl.Utf8, "content": pl.Utf8})
TURN_ARROW = pa.struct(
    [pa.field("role", pa.large_string()), pa.field("content", pa.large_string())]
)
RISK_CATEGORIES = ("illicit_criminal", "hateful_harmful", "unqualified_advice")  # RECIPE.md §9
SPLITS = ("train", "heldout")
MASK_STRATEGIES = ("all_assistant", "last_turn")  # tasks/chat/format.py MaskStrategy


def roles_alternate(turns: pl.Expr) -> pl.Expr:
    """Roles go user, assistant, user, ... (the length is checked by the caller)."""
    expected = (
        pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("user")).otherwise(pl.lit("assistant"))
    )
    return turns.list.eval(pl.element().struct.field("role") == expected).list.all()


def ends_with_user(turns: pl.Expr) -> pl.Expr:
    """A prompt: roles alternate from the user's and the last turn is the user's (odd length)."""
    return roles_alternate(turns) & (turns.list.len() % 2 == 1)


def _alternating(turns: pl.Expr) -> pl.Expr:
    """user, assistant, user, assistant, ...: an even number (>= 2) of turns."""
    length = turns.list.len()
    return roles_alternate(turns) & (length >= 2) & (length % 2 == 0)


class SftDialogues(pap.DataFrameModel):
    dialogue_id: str = pap.Field(unique=True, str_length={"min_value": 1})
    source: str = pap.Field(str_length={"min_value": 1})  # chitchat, tasks, donotanswer, ...
    category: str = pap.Field(
        str_matches=r"^[a-z][a-z0-9_]*$"
    )  # chitchat, arithmetic, adversarial, ...
    system: str  # "" = no system prompt
    turns: pl.List(TURN)
    is_safety: bool  # the prompt may elicit unsafe answers (adversarial and borderline prompts)
    risk_category: Optional[str] = pap.Field(nullable=True, isin=list(RISK_CATEGORIES))
    reference: Optional[str] = pap.Field(nullable=True)  # checkable answer to the last user turn
    instruction: Optional[str] = pap.Field(nullable=True)  # JSON spec of a checkable instruction
    mask_strategy: Optional[str] = pap.Field(
        nullable=True, isin=list(MASK_STRATEGIES)
    )  # None = config
    split: str = pap.Field(isin=list(SPLITS))
    location: str = pap.Field(str_length={"min_value": 1})  # file:line, or the generator and seed

    class Config:
        strict = True

    @pap.dataframe_check(
        error="turns must alternate user/assistant, start with user, end with assistant"
    )
    def turns_alternate(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(_alternating(pl.col("turns")))

    @pap.dataframe_check(error="every turn needs non-blank content")
    def turns_not_blank(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("turns")
            .list.eval(pl.element().struct.field("content").str.contains(r"\S"))
            .list.all()
        )

    @pap.dataframe_check(error="a risk_category needs is_safety")
    def risk_needs_safety(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("risk_category").is_null() | pl.col("is_safety"))


SCHEMA = pa.schema(
    [
        pa.field("dialogue_id", pa.large_string(), nullable=False),
        pa.field("source", pa.large_string(), nullable=False),
        pa.field("category", pa.large_string(), nullable=False),
        pa.field("system", pa.large_string(), nullable=False),
        pa.field("turns", pa.large_list(TURN_ARROW), nullable=False),
        pa.field("is_safety", pa.bool_(), nullable=False),
        pa.field("risk_category", pa.large_string(), nullable=True),
        pa.field("reference", pa.large_string(), nullable=True),
        pa.field("instruction", pa.large_string(), nullable=True),
        pa.field("mask_strategy", pa.large_string(), nullable=True),
        pa.field("split", pa.large_string(), nullable=False),
        pa.field("location", pa.large_string(), nullable=False),
    ]
)

CONTRACT = Contract(
    name="sft_dialogues",
    version="1.0",
    model=SftDialogues,
    schema=SCHEMA,
    description="SFT dialogues: system prompt, alternating user/assistant turns, tags, split.",
)
