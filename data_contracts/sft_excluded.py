"""sft_excluded: every dialogue SFT curation (or Ghost Attention sampling) set aside, with why."""

import pandera.polars as pap
import pyarrow as pa

from data_contracts.base import Contract
from data_contracts.sft_dialogues import SCHEMA as DIALOGUES_SCHEMA
from data_contracts.sft_dialogues import SftDialogues


class SftExcluded(SftDialogues):
    stage: str = pap.Field(str_length={"min_value": 1})  # curate, tokenize, gatt
    reason: str = pap.Field(str_matches=r"^[a-z]+_[a-z0-9_]+$")  # <step>_<rule>
    detail: str

    class Config:
        strict = True


SCHEMA = (
    DIALOGUES_SCHEMA.append(pa.field("stage", pa.large_string(), nullable=False))
    .append(pa.field("reason", pa.large_string(), nullable=False))
    .append(pa.field("detail", pa.large_string(), nullable=False))
)

CONTRACT = Contract(
    name="sft_excluded",
    version="1.0",
    model=SftExcluded,
    schema=SCHEMA,
    description="Dialogues dropped by SFT curation, tokenisation limits or GAtt, with a reason.",
)
