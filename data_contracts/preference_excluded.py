"""preference_excluded: comparisons set aside, with why (e.g. the paper's rule: a pair whose
chosen response is unsafe while the rejected one is safe is not used, §3.2.1)."""

from typing import Optional

import pandera.polars as pap
import pyarrow as pa

from data_contracts.base import Contract
from data_contracts.preference_pairs import SCHEMA as PAIRS_SCHEMA
from data_contracts.preference_pairs import PreferencePairs

EXCLUDED_BIN = "chosen_unsafe_rejected_safe"


class PreferenceExcluded(PreferencePairs):
    # the excluded bin is allowed here (the rule that drops it is the reason)
    safety_bin: str = pap.Field(
        isin=["chosen_safe_rejected_unsafe", "both_safe", "both_unsafe", EXCLUDED_BIN]
    )
    # no response at all (its prompt did not fit the window): nothing ended or was cut off
    chosen_ended: Optional[bool] = pap.Field(nullable=True)
    rejected_ended: Optional[bool] = pap.Field(nullable=True)
    reason: str = pap.Field(str_matches=r"^[a-z]+_[a-z0-9_]+$")
    detail: str

    class Config:
        strict = True

    @pap.dataframe_check(error="safety_bin must agree with chosen_safe / rejected_safe")
    def bin_matches_labels(cls, data):
        import polars as pl

        c, r, b = pl.col("chosen_safe"), pl.col("rejected_safe"), pl.col("safety_bin")
        return data.lazyframe.select(
            ((b == "chosen_safe_rejected_unsafe") & c & ~r)
            | ((b == "both_safe") & c & r)
            | ((b == "both_unsafe") & ~c & ~r)
            | ((b == EXCLUDED_BIN) & ~c & r)
        )


_NULLABLE_ENDED = PAIRS_SCHEMA
for _name in ("chosen_ended", "rejected_ended"):
    _i = _NULLABLE_ENDED.get_field_index(_name)
    _NULLABLE_ENDED = _NULLABLE_ENDED.set(_i, _NULLABLE_ENDED.field(_i).with_nullable(True))

SCHEMA = _NULLABLE_ENDED.append(pa.field("reason", pa.large_string(), nullable=False)).append(
    pa.field("detail", pa.large_string(), nullable=False)
)

CONTRACT = Contract(
    name="preference_excluded",
    version="1.1",
    model=PreferenceExcluded,
    schema=SCHEMA,
    description="Comparisons not used, with a reason code and detail.",
)
