"""Small record helpers shared by the stages: deterministic splits, one JSONL line as an object,
quarantine rows, dialogue-shaped rows as a DataFrame with a contract's exact types."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import polars as pl
import pyarrow as pa

from data_contracts import get_contract

DOC_ID, SOURCE, TEXT = "doc_id", "source", "text"  # document columns (corpus, toxicity)
STAGE = "sft_ingest"  # the `stage` of quarantine rows written through `quarantine_record`


PAYLOAD_MAX_CHARS = 500


def assign_split(key: str, heldout_frac: float, salt: str = "") -> str:
    """ "heldout" when the first 8 bytes of sha256(salt + key), as a fraction of 2**64, are
    below `heldout_frac`; otherwise "train". The same key always lands in the same split."""
    digest = hashlib.sha256((salt + key).encode("utf-8")).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") / 2**64 < heldout_frac else "train"


def json_object(raw: bytes) -> dict:
    """One JSONL line as a dict; ValueError saying what is wrong (UTF-8, JSON, not an object)."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"invalid UTF-8 at byte {e.start} of the line") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"bad JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"JSON value is {type(obj).__name__}, expected an object")
    return obj


def quarantine_record(source: str, location: str, error: str, payload: Any) -> dict:
    """One `quarantine` row; the payload is the raw input, valid UTF-8, cut to 500 chars."""
    text = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, ensure_ascii=False, default=str)
    )
    text = text.encode("utf-8", "replace").decode("utf-8")
    return {
        "source": source,
        "location": location,
        "stage": STAGE,
        "error": error,
        "payload": text[:PAYLOAD_MAX_CHARS],
    }


def dialogue_frame(rows: list[dict], contract: str) -> pl.DataFrame:
    """Rows (dicts with exactly the contract's columns) -> a DataFrame with its exact dtypes."""
    schema = get_contract(contract).schema
    return pl.from_arrow(pa.Table.from_pylist(rows, schema=schema))


def prompt_key(prompt: str) -> str:
    """Case- and whitespace-folded prompt: the key for dedup and for the split."""
    return " ".join(prompt.casefold().split())
