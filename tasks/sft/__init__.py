"""Supervised fine-tuning (RECIPE.md §4, §8): dialogue sources, curation, the Llama 2 chat
format with prompt-loss masking and packing, Ghost Attention, and the multi-turn evaluation.

Pure code works on dialogues as plain dicts shaped like one row of the `sft_dialogues`
contract; `dialogue_frame` turns a list of them into a DataFrame with the contract's types.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from data_contracts import get_contract


def dialogue_frame(rows: list[dict], contract: str = "sft_dialogues") -> pl.DataFrame:
    """Rows (dicts with exactly the contract's columns) -> a DataFrame with its exact dtypes."""
    schema = get_contract(contract).schema
    return pl.from_arrow(pa.Table.from_pylist(rows, schema=schema))
