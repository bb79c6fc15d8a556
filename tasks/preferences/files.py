"""Preference labels that people collected: our own Parquet files and Anthropic HH-RLHF JSONL.

The second `Annotator` source of DESIGN.md: where the rule annotator (a stand-in for human
annotators, `tasks.judges.annotator`) makes labels, these readers take labels from files. Pure
code: each reader returns rows shaped like the `preference_pairs` contract (plain dicts) and
quarantine records (file and row or line, and why) for input it could not use; nothing is
dropped silently.

HH-RLHF (Bai et al. 2022) lines hold two transcripts, {"chosen": ..., "rejected": ...}, which
share every turn but the last assistant answer. HH mapped onto the contract:
- rating: HH has no strength label. Every pair is "better", the second of the four levels, whose
  reward-model margin (2/3 small, 2 large, RECIPE.md §6) sits in the middle of the scale: the
  pairs are neither ties nor known to be clear-cut.
- safety labels: HH's "harmless" data asked people to pick the LESS harmful answer. Read with
  kind="safety", the chosen answer is taken as safe and the rejected one as unsafe
  ("chosen_safe_rejected_unsafe"), which overstates the contrast when both were harmful or both
  harmless. With kind="helpfulness" both are taken as safe ("both_safe").
- split: by the first user turn (case and whitespace folded), so dialogues opening with the same
  request never land in both train and test; test_frac of them go to "test".
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow.parquet as pq

from data_contracts.preference_pairs import CONTRACT
from tasks.chat.hh import parse_hh_transcript
from tasks.judges.annotator import safety_bin
from tasks.records import assign_split, prompt_key, quarantine_record
from tasks.textio import JSON_ARRAY_MESSAGE, JsonLineError, is_json_array, loads_line

HH_RATING = "better"  # HH has no strength label (module docstring)
HUMAN_COLLECTED = "human-collected"  # model_chosen / model_rejected: which model is unknown
HH_REASONS = ("bad_json", "missing_field", "bad_transcript", "prefix_mismatch", "identical_answers")


class _Unusable(ValueError):
    """An HH line that cannot become a pair; `reason` is one of HH_REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def preference_row(
    *,
    pair_id: str,
    system: str,
    prompt: list[dict],
    chosen: str,
    rejected: str,
    rating: str,
    kind: str,
    chosen_safe: bool,
    rejected_safe: bool,
    source: str,
    batch: int,
    split: str,
    annotator: str,
    category: str,
    is_safety: bool,
    risk_category: str | None = None,
    reference: str | None = None,
    chosen_score: float | None = None,
    rejected_score: float | None = None,
    model_chosen: str = HUMAN_COLLECTED,
    model_rejected: str = HUMAN_COLLECTED,
    temperature_chosen: float | None = None,
    temperature_rejected: float | None = None,
    chosen_ended: bool = True,
    rejected_ended: bool = True,
) -> dict:
    """One `preference_pairs` row; prompt_id is a hash of system + prompt turns."""
    return {
        "pair_id": pair_id,
        "prompt_id": prompt_id(system, prompt),
        "system": system,
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "rating": rating,
        "kind": kind,
        "safety_bin": safety_bin(chosen_safe, rejected_safe),
        "chosen_safe": chosen_safe,
        "rejected_safe": rejected_safe,
        "chosen_score": chosen_score,
        "rejected_score": rejected_score,
        "is_safety": is_safety,
        "category": category,
        "risk_category": risk_category,
        "reference": reference,
        "source": source,
        "model_chosen": model_chosen,
        "model_rejected": model_rejected,
        "temperature_chosen": temperature_chosen,
        "temperature_rejected": temperature_rejected,
        "chosen_ended": chosen_ended,
        "rejected_ended": rejected_ended,
        "batch": batch,
        "split": split,
        "annotator": annotator,
    }


def prompt_id(system: str, prompt: list[dict]) -> str:
    """16 hex digits of sha256 over the system prompt and turns: equal prompts, equal ids."""
    key = json.dumps([system, [[t["role"], t["content"]] for t in prompt]], ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# our own contract, as Parquet


def _with_ended(df: pl.DataFrame) -> pl.DataFrame:
    """Files written before contract 1.1 have no chosen_ended / rejected_ended: their responses
    count as ended (written by people, or sampled before cut-offs were recorded)."""
    missing = [c for c in ("chosen_ended", "rejected_ended") if c not in df.columns]
    return df.with_columns([pl.lit(True).alias(c) for c in missing]) if missing else df


def read_preference_parquet(path: Path) -> tuple[list[dict], list[dict]]:
    """A Parquet file with the `preference_pairs` columns -> (valid rows, quarantine).

    Missing or extra columns and wrong dtypes raise ContractError (no row is to blame; only the
    ended flags, new in contract 1.1, may be missing: then every response ended); rows that
    break a row-level rule are quarantined at `<file>:row N` (1-based) with every rule they break.
    """
    if not path.is_file():
        raise FileNotFoundError(f"preference file {path} does not exist")
    try:
        df = pl.from_arrow(pq.read_table(path))
    except Exception as e:  # noqa: BLE001 - any unreadable file: name it and say why
        raise ValueError(f"{path} is not a readable Parquet file: {e}") from e
    df = _with_ended(df)
    valid, invalid = CONTRACT.split_valid(df, where=str(path))
    if invalid.height == 0:
        return valid.to_dicts(), []
    # split_valid does not report row numbers: find each bad row's position by its content.
    # Identical rows share a key; the contract keeps the first copy and flags later ones.
    positions: dict[str, list[int]] = {}
    for i, row in enumerate(df.select(CONTRACT.schema.names).to_dicts(), start=1):
        positions.setdefault(_row_key(row), []).append(i)
    bad = invalid.to_dicts()
    flagged = Counter(_row_key({k: v for k, v in r.items() if k != "contract_error"}) for r in bad)
    quarantine = []
    for rec in bad:
        error = rec.pop("contract_error")
        key = _row_key(rec)
        rows_with_key = positions.get(key, [])
        n = rows_with_key[len(rows_with_key) - flagged[key]] if rows_with_key else "?"
        flagged[key] -= 1
        quarantine.append(
            quarantine_record(
                rec.get("source") or path.name, f"{path}:row {n}", f"contract: {error}", rec
            )
        )
    return valid.to_dicts(), quarantine


def _row_key(row: dict) -> str:
    return json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Anthropic HH-RLHF JSONL


def read_hh_jsonl(
    path: Path, kind: Literal["helpfulness", "safety"], source: str, batch: int, test_frac: float
) -> tuple[list[dict], list[dict], dict[str, float]]:
    """An HH-RLHF JSONL file (or .jsonl.gz) -> (rows, quarantine, stats).

    One pair per line: pair_id "<source>:<file name>:<line>", annotator "file:<file name>".
    Accounting: lines_in = kept + quarantined (blank lines are not counted), and quarantined =
    the sum of `quarantined_<reason>` over HH_REASONS.
    """
    if kind not in ("helpfulness", "safety"):
        raise ValueError(f"unknown preference kind {kind!r}; use 'helpfulness' or 'safety'")
    if not 0 <= test_frac <= 1:
        raise ValueError(f"test_frac {test_frac} must be between 0 and 1")
    if not path.is_file():
        raise FileNotFoundError(f"HH-RLHF file {path} does not exist")
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    rows, quarantine = [], []
    counts = Counter({f"quarantined_{r}": 0 for r in HH_REASONS})
    array = is_json_array(raw)  # then every line says so, instead of one parse error each
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        location = f"{path}:line {n}"
        text = line.decode("utf-8", "replace")
        try:
            if array:
                raise _Unusable("bad_json", JSON_ARRAY_MESSAGE)
            prompt, chosen, rejected = _hh_pair(line)
        except _Unusable as e:
            counts[f"quarantined_{e.reason}"] += 1
            quarantine.append(quarantine_record(source, location, f"{e.reason}: {e}", text))
            continue
        safety = kind == "safety"
        rows.append(
            preference_row(
                pair_id=f"{source}:{path.name}:{n}",
                system="",
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                rating=HH_RATING,
                kind=kind,
                chosen_safe=True,
                rejected_safe=not safety,
                source=source,
                batch=batch,
                split=_split(prompt, test_frac),
                annotator=f"file:{path.name}",
                category="hh",
                is_safety=safety,
            )
        )
    counts.update(
        lines_in=len(rows) + len(quarantine),
        kept=len(rows),
        quarantined=len(quarantine),
        kept_train=sum(r["split"] == "train" for r in rows),
        kept_test=sum(r["split"] == "test" for r in rows),
    )
    return rows, quarantine, dict(counts)


def _hh_pair(line: bytes) -> tuple[list[dict], str, str]:
    """One JSONL line -> (prompt turns ending with the user, chosen answer, rejected answer)."""
    try:
        obj = loads_line(line.decode("utf-8"))  # also accepts a byte-order mark, deep nesting
    except UnicodeDecodeError as e:
        raise _Unusable("bad_json", f"invalid UTF-8 at byte {e.start} of the line") from None
    except JsonLineError as e:
        raise _Unusable("bad_json", str(e)) from None
    if not isinstance(obj, dict):
        raise _Unusable("bad_json", f"JSON value is {type(obj).__name__}, expected an object")
    transcripts = {}
    for field in ("chosen", "rejected"):
        if not isinstance(obj.get(field), str):
            raise _Unusable("missing_field", f"missing field {field!r} (a transcript string)")
        try:
            transcripts[field] = parse_hh_transcript(obj[field])
        except ValueError as e:
            raise _Unusable("bad_transcript", f"{field}: {e}") from None
    chosen, rejected = transcripts["chosen"], transcripts["rejected"]
    if len(chosen) != len(rejected):
        raise _Unusable(
            "prefix_mismatch",
            f"chosen has {len(chosen)} turns, rejected "
            f"{len(rejected)}: they must differ only in the final answer",
        )
    for i, (c, r) in enumerate(zip(chosen[:-1], rejected[:-1]), start=1):
        if c != r:
            raise _Unusable(
                "prefix_mismatch",
                f"turn {i} ({c['role']}) differs between chosen "
                "and rejected: they must differ only in the final answer",
            )
    if chosen[-1]["content"] == rejected[-1]["content"]:
        raise _Unusable(
            "identical_answers",
            "chosen and rejected final answers are identical: there is no preference to learn",
        )
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def _split(prompt: list[dict], test_frac: float) -> str:
    held = assign_split(prompt_key(prompt[0]["content"]), test_frac) == "heldout"
    return "test" if held else "train"
