"""SFT dialogue sources: the chitchat corpus and a user's own dialogue files. Pure code.

Every reader returns rows shaped like the `sft_dialogues` contract (plain dicts), quarantine
records for input it could not read (with the file and line or row, never a silent drop) and
flat stats. Rows a reader *could* read but leaves out on purpose (low ratings, too short) are
not quarantine: they come back as `excluded` (row, reason, detail) tuples where they form a
valid dialogue, and are counted per reason in the stats either way.

`dialogue_row`, shared with `synthetic.py` and `safety.py`, lives here too; `assign_split` and
`quarantine_record` are in `tasks.records`.
"""

from __future__ import annotations

import json
import random
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.chat.hh import parse_hh_transcript
from tasks.chat.prompt import RISK_CATEGORIES
from tasks.records import assign_split, quarantine_record
from tasks.textio import JSON_ARRAY_MESSAGE, JsonLineError, is_json_array, loads_line

Excluded = tuple[dict, str, str]  # (dialogue row, reason, detail)


def dialogue_row(
    *,
    dialogue_id: str,
    source: str,
    category: str,
    turns: list[dict],
    split: str,
    location: str,
    system: str = "",
    is_safety: bool = False,
    risk_category: str | None = None,
    reference: str | None = None,
) -> dict:
    """One `sft_dialogues` row; `instruction` and `mask_strategy` are left to later stages."""
    return {
        "dialogue_id": dialogue_id,
        "source": source,
        "category": category,
        "system": system,
        "turns": turns,
        "is_safety": is_safety,
        "risk_category": risk_category,
        "reference": reference,
        "instruction": None,
        "mask_strategy": None,
        "split": split,
        "location": location,
    }


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# chitchat (chitchat-dataset==0.9.0): human-human chats with 1-10 ratings

CHITCHAT_MEMBER = "chitchat_dataset/dataset.json"
RATING_KEYS = ("witty", "upbeat", "interesting")
CHITCHAT_REASONS = ("chitchat_low_rating", "chitchat_unrated", "chitchat_too_short")


class ChitchatConfig(_Config):
    # Mean of witty/upbeat/interesting. 7.0 keeps 1,678 of the 3,705 rated chats that hold a
    # full exchange (45 %); 1,363 of the rest sit at exactly 5.0, the rating form's default.
    min_rating: float = Field(7.0, ge=1, le=10)
    keep_unrated: bool = False  # 1,180 chats have no ratings at all
    max_dialogues: int | None = Field(None, gt=0)  # seeded sample of the kept chats (tiny preset)
    seed: int = 0
    heldout_frac: float = Field(0.1, ge=0, le=1)


def read_chitchat(
    wheel: Path, cfg: ChitchatConfig
) -> tuple[list[dict], list[Excluded], list[dict], dict[str, float]]:
    """The chitchat wheel -> (rows, excluded, quarantine, stats).

    One turn is one sender's consecutive utterances joined with " " (blank utterances are
    skipped, and turns of the same sender that then touch are merged); the first sender is the
    user. A trailing user turn is dropped. Accounting: chats_in = kept + excluded by reason
    (`chitchat_too_short` chats cannot form a dialogue, so they are only counted; chats left out
    of a `max_dialogues` sample are excluded as `chitchat_sampled_out`) + quarantined.
    """
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = json.loads(zf.read(CHITCHAT_MEMBER))
        except KeyError:
            raise FileNotFoundError(
                f"{wheel} has no {CHITCHAT_MEMBER}: is it chitchat-dataset 0.9.0?"
            ) from None
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{wheel}!{CHITCHAT_MEMBER} is not valid JSON: {e}; re-fetch the wheel"
            ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{wheel}!{CHITCHAT_MEMBER} holds a {type(data).__name__}, expected an object of chats"
        )
    kept, excluded, quarantine = [], [], []
    counts = Counter(
        {
            key: 0
            for key in (
                "blank_utterances",
                "trailing_user_turns_dropped",
                "sampled_out",
                *(f"excluded_{r}" for r in CHITCHAT_REASONS),
            )
        }
    )
    counts["chats_in"] = len(data)
    for chat_id, chat in data.items():
        location = f"{wheel.name}!{CHITCHAT_MEMBER}:{chat_id}"
        try:
            turns, blank = _chitchat_turns(chat)
            mean = _mean_rating(chat)
        except ValueError as e:
            quarantine.append(quarantine_record("chitchat", location, str(e), chat))
            continue
        counts["blank_utterances"] += blank
        if turns[-1]["role"] == "user":
            turns = turns[:-1]
            counts["trailing_user_turns_dropped"] += 1
        if not turns:
            counts["excluded_chitchat_too_short"] += 1
            continue
        row = dialogue_row(
            dialogue_id=f"chitchat:{chat_id}",
            source="chitchat",
            category="chitchat",
            turns=turns,
            split=assign_split(chat_id, cfg.heldout_frac),
            location=location,
        )
        if mean is None and not cfg.keep_unrated:
            excluded.append((row, "chitchat_unrated", "no witty/upbeat/interesting ratings"))
        elif mean is not None and mean < cfg.min_rating:
            detail = f"mean rating {mean:.2f} < min_rating {cfg.min_rating}"
            excluded.append((row, "chitchat_low_rating", detail))
        else:
            kept.append(row)
    for _, reason, _ in excluded:
        counts[f"excluded_{reason}"] += 1
    if cfg.max_dialogues is not None and len(kept) > cfg.max_dialogues:
        counts["sampled_out"] = len(kept) - cfg.max_dialogues
        chosen = {r["dialogue_id"] for r in random.Random(cfg.seed).sample(kept, cfg.max_dialogues)}
        excluded += [
            (
                r,
                "chitchat_sampled_out",
                f"not in the seeded sample of max_dialogues {cfg.max_dialogues}",
            )
            for r in kept
            if r["dialogue_id"] not in chosen
        ]
        kept = [r for r in kept if r["dialogue_id"] in chosen]
    counts.update(
        kept=len(kept),
        quarantined=len(quarantine),
        kept_train=sum(r["split"] == "train" for r in kept),
        kept_heldout=sum(r["split"] == "heldout" for r in kept),
    )
    return kept, excluded, quarantine, dict(counts)


def _chitchat_turns(chat: Any) -> tuple[list[dict], int]:
    """A chat's sender groups -> (alternating turns, number of blank utterances skipped)."""
    if not isinstance(chat, dict) or not isinstance(chat.get("messages"), list):
        raise ValueError("chat has no 'messages' list")
    turns: list[dict] = []
    senders: list[str] = []
    blank = 0
    for g, group in enumerate(chat["messages"]):
        if not isinstance(group, list) or not group:
            raise ValueError(f"message group {g} is not a non-empty list of utterances")
        for m in group:
            if not isinstance(m, dict) or not isinstance(m.get("text"), str) or "sender" not in m:
                raise ValueError(
                    f"message group {g} has an utterance without string 'text' and 'sender'"
                )
        texts = [m["text"].strip() for m in group if m["text"].strip()]
        blank += len(group) - len(texts)
        sender = group[0]["sender"]
        if any(m["sender"] != sender for m in group):
            raise ValueError(f"message group {g} mixes senders")
        if not texts:
            continue
        if senders and senders[-1] == sender:
            turns[-1]["content"] += " " + " ".join(texts)
            continue
        if sender not in senders and len(set(senders)) == 2:
            raise ValueError("chat has more than two senders")
        role = "user" if not senders or sender == senders[0] else "assistant"
        senders.append(sender)
        turns.append({"role": role, "content": " ".join(texts)})
    if not turns:
        raise ValueError("chat has no non-blank utterances")
    return turns, blank


def _mean_rating(chat: dict) -> float | None:
    """Mean of the three ratings; None when any is missing. A rating outside 1-10 is an error."""
    ratings = chat.get("ratings") or {}
    if not isinstance(ratings, dict):
        raise ValueError(f"ratings is {type(ratings).__name__}, expected an object")
    values = [ratings.get(k) for k in RATING_KEYS]
    if any(v is None for v in values):
        return None
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 1 <= v <= 10 for v in values
    ):
        raise ValueError(f"ratings {ratings} are not numbers from 1 to 10")
    return sum(values) / len(values)


# ---------------------------------------------------------------------------------------------
# A user's own dialogues: messages-format or Anthropic HH-style transcripts, JSONL or Parquet


class UserDialoguesConfig(_Config):
    category: str = Field("user", pattern=r"^[a-z][a-z0-9_]*$")
    hh_field: str = "chosen"  # the field holding the transcript in hh format
    heldout_frac: float = Field(0.1, ge=0, le=1)  # for records without a "split" field


def read_user_dialogues(
    path: Path, fmt: Literal["messages", "hh"], source: str, cfg: UserDialoguesConfig
) -> tuple[list[dict], list[dict], dict[str, float]]:
    """A JSONL (one object a line) or Parquet file -> (rows, quarantine, stats).

    Optional record fields: "id" (dialogue_id becomes "<source>:<id>", else
    "<source>:<file name>:<line>"), "is_safety", "risk_category", "split". Without a split the
    record is assigned by its first user turn, so one prompt never lands in both splits.
    Accounting: records_in = kept + quarantined.
    """
    if fmt not in ("messages", "hh"):
        raise ValueError(f"unknown user dialogue format {fmt!r}; use 'messages' or 'hh'")
    if not path.is_file():
        raise FileNotFoundError(f"user dialogue file {path} does not exist")
    rows, quarantine, seen = [], [], {}  # dialogue id -> location of its first record
    for location, n, obj, error in _read_records(path):
        try:
            if error:
                raise ValueError(error)
            row = _user_row(obj, fmt, source, cfg, f"{source}:{path.name}:{n}", location)
            if row["dialogue_id"] in seen:
                raise ValueError(
                    f"duplicate dialogue id {row['dialogue_id']!r}, first at "
                    f"{seen[row['dialogue_id']]}"
                )
        except ValueError as e:
            quarantine.append(quarantine_record(source, location, str(e), obj))
            continue
        seen[row["dialogue_id"]] = location
        rows.append(row)
    stats = {
        "records_in": len(rows) + len(quarantine),
        "kept": len(rows),
        "quarantined": len(quarantine),
        "kept_train": sum(r["split"] == "train" for r in rows),
        "kept_heldout": sum(r["split"] == "heldout" for r in rows),
    }
    return rows, quarantine, stats


def _read_records(path: Path):
    """Yield (location, number, record or raw text, error or None) per line or Parquet row."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001 - an unreadable file is one quarantine record
            yield str(path), 0, "", f"not a readable Parquet file: {e}"
            return
        for i, rec in enumerate(records, start=1):
            yield f"{path}:row {i}", i, rec, None
        return
    data = path.read_bytes()
    array = is_json_array(data)  # then every line says so, instead of one parse error each
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        loc = f"{path}:line {n}"
        if array:
            yield loc, n, raw.decode("utf-8", "replace"), JSON_ARRAY_MESSAGE
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield (
                loc,
                n,
                raw.decode("utf-8", "replace"),
                f"invalid UTF-8 at byte {e.start} of the line",
            )
            continue
        try:
            obj = loads_line(line)  # also accepts a byte-order mark, survives deep nesting
        except JsonLineError as e:
            yield loc, n, line, f"bad JSON: {e}"
            continue
        problem = (
            None
            if isinstance(obj, dict)
            else f"JSON value is {type(obj).__name__}, expected an object"
        )
        yield loc, n, obj, problem


def _user_row(
    obj: dict, fmt: str, source: str, cfg: UserDialoguesConfig, default_id: str, location: str
) -> dict:
    if fmt == "hh":
        if not isinstance(obj.get(cfg.hh_field), str):
            raise ValueError(f"missing transcript field {cfg.hh_field!r} (a string)")
        system, turns = "", parse_hh_transcript(obj[cfg.hh_field])
    else:
        system, turns = _parse_messages(obj.get("messages"))
    risk = obj.get("risk_category")
    if risk is not None and risk not in RISK_CATEGORIES:
        raise ValueError(f"risk_category {risk!r} is not one of {RISK_CATEGORIES}")
    is_safety = obj.get("is_safety")
    if is_safety is None:
        is_safety = risk is not None
    if not isinstance(is_safety, bool) or (risk is not None and not is_safety):
        raise ValueError(
            f"is_safety {is_safety!r} must be true or false, and true with a risk_category"
        )
    split = obj.get("split") or assign_split(turns[0]["content"], cfg.heldout_frac)
    if split not in ("train", "heldout"):
        raise ValueError(f"split {split!r} is not 'train' or 'heldout'")
    record_id = obj.get("id")
    return dialogue_row(
        dialogue_id=default_id if record_id in (None, "") else f"{source}:{record_id}",
        source=source,
        category=cfg.category,
        system=system,
        turns=turns,
        split=split,
        location=location,
        is_safety=is_safety,
        risk_category=risk,
    )


def _parse_messages(messages: Any) -> tuple[str, list[dict]]:
    """[{"role", "content"}, ...] with an optional leading system message -> (system, turns)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("missing 'messages' (a non-empty list of {role, content})")
    system = ""
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i + 1} is not an object with string 'content'")
        if not m["content"].strip():
            raise ValueError(f"message {i + 1} ({m.get('role')}) has blank content")
    if messages[0].get("role") == "system":
        system, messages = messages[0]["content"], messages[1:]
    turns = []
    for i, m in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if m.get("role") != expected:
            raise ValueError(
                f"turn {i + 1} has role {m.get('role')!r}, expected {expected!r} "
                "(user and assistant alternate, starting with user)"
            )
        turns.append({"role": expected, "content": m["content"]})
    if not turns or len(turns) % 2:
        raise ValueError("dialogue must end with an assistant message")
    return system, turns
