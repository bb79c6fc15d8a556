"""Preference labels from people (RECIPE.md §5; issue 16): the sampled pairs of a collection
go to the annotation store, where the annotation page (`python -m flows.annotate serve`) shows
them; after the flow waits (flows/people.py), each person's label becomes a `preference_pairs`
row through the same path as the rule annotator's judgement (`tasks.preferences.collect.annotate`:
rating, safety bins, the chosen-unsafe exclusion). A pair nobody labelled becomes a
`preference_excluded` row with reason `pairs_unlabelled`.

With `annotator: mixed`, a seeded share of the pairs (by a hash of the pair id, so the split
does not move when other pairs are added) goes to people and the rest to the rule annotator;
the rows' `annotator` column says `person:<id>` or the rule annotator's name.

Gold pairs (`people.gold_file`, JSONL) have a known answer; they are shown like any other pair,
score each annotator (label quality) and never become training rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from pathlib import Path

from data_contracts.preference_pairs import RATINGS
from tasks.judges.annotator import Judgement
from tasks.preferences.collect import CollectionConfig
from tasks.records import assign_split, json_object

PERSON = "person:"
GOLD_PREFIX = "gold:"


def default_store_url(run_dir: str | Path) -> str:
    """The annotation store when `people.store` is not set: SQLite in the run directory (the
    annotation page's default too)."""
    return f"sqlite:///{Path(run_dir).resolve() / 'annotation.db'}"


def pair_id(p: dict) -> str:
    """The id a sampled pair has in `preference_pairs` and in the annotation store."""
    return f"{p['prompt_id']}@batch{p['batch']}"


def usable(p: dict) -> bool:
    """Both responses exist and differ: only such pairs are worth a person's time (the others
    are excluded with their reason, as for the rule annotator)."""
    a, b = p.get("response_a"), p.get("response_b")
    return bool(a and b and a.strip() != b.strip())


def route(sampled: list[dict], cfg: CollectionConfig, seed: int) -> list[dict]:
    """Each sampled pair with `labelled_by`: "people" or "rule". `people`: every pair; `mixed`:
    the pairs whose hashed id falls in `people.share`; `rule`: none."""
    out = []
    for p in sampled:
        if cfg.annotator == "people":
            by = "people"
        elif cfg.annotator == "rule":
            by = "rule"
        else:
            held = assign_split(pair_id(p), cfg.people.share, salt=f"people:{seed}:")
            by = "people" if held == "heldout" else "rule"
        out.append({**p, "labelled_by": by})
    return out


def store_items(sampled: list[dict], double_share: float, seed: int) -> list[dict]:
    """Annotation-store items for the usable pairs labelled by people; `double_share` of them
    (by a hash of the pair id) need two annotators."""
    items = []
    for p in sampled:
        if p["labelled_by"] != "people" or not usable(p):
            continue
        pid = pair_id(p)
        double = assign_split(pid, double_share, salt=f"double:{seed}:") == "heldout"
        items.append(
            {
                "pair_id": pid,
                "kind": "safety" if p["is_safety"] else "helpfulness",
                "is_safety": bool(p["is_safety"]),
                "system": p.get("system") or "",
                "turns": p["turns"],
                "response_a": p["response_a"],
                "response_b": p["response_b"],
                "annotators_needed": 2 if double else 1,
                "gold": None,
                "meta": {"batch": p["batch"], "category": p.get("category")},
            }
        )
    return items


def read_gold(path: Path) -> list[dict]:
    """Gold pairs from JSONL, one object per line: `id`, `turns` (or `prompt`: one user turn),
    optional `system`, `is_safety`, `response_a`, `response_b`, `preferred` ("a"|"b"),
    `rating` (one of the four levels), `safe_a`/`safe_b` (safety pairs). A bad line is an error
    naming the file, line and field."""
    items = []
    seen = set()
    for n, raw in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}, line {n}"
        try:
            obj = json_object(raw)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        turns = obj.get("turns") or (
            [{"role": "user", "content": obj["prompt"]}] if obj.get("prompt") else None
        )
        for field, ok in (
            ("id", isinstance(obj.get("id"), str) and obj["id"] and obj["id"] not in seen),
            ("turns", isinstance(turns, list) and turns and turns[-1].get("role") == "user"),
            ("response_a", isinstance(obj.get("response_a"), str) and obj["response_a"].strip()),
            ("response_b", isinstance(obj.get("response_b"), str) and obj["response_b"].strip()),
            ("preferred", obj.get("preferred") in ("a", "b")),
            ("rating", obj.get("rating") in RATINGS),
        ):
            if not ok:
                raise ValueError(
                    f"{where}: field {field!r} is missing, repeated or invalid "
                    f"(got {obj.get(field)!r})"
                )
        safety = bool(obj.get("is_safety", False))
        if safety and not all(isinstance(obj.get(k), bool) for k in ("safe_a", "safe_b")):
            raise ValueError(f"{where}: a safety gold pair needs boolean safe_a and safe_b")
        seen.add(obj["id"])
        items.append(
            {
                "pair_id": GOLD_PREFIX + obj["id"],
                "kind": "safety" if safety else "helpfulness",
                "is_safety": safety,
                "system": obj.get("system") or "",
                "turns": turns,
                "response_a": obj["response_a"],
                "response_b": obj["response_b"],
                "annotators_needed": 1,
                "gold": {
                    "preferred": obj["preferred"],
                    "rating": obj["rating"],
                    "safe_a": obj.get("safe_a"),
                    "safe_b": obj.get("safe_b"),
                },
                "meta": {"gold": True},
            }
        )
    return items


def batch_id(stage: str, items: list[dict]) -> str:
    """A stable id for the store batch of these items (the same pairs -> the same batch, so a
    re-run or a resumed suspension finds the labels already given)."""
    digest = hashlib.sha256(
        json.dumps([i["pair_id"] for i in items] + [stage]).encode()
    ).hexdigest()
    return f"{stage}-{digest[:10]}"


def batch_title(stage: str, now: dt.datetime | None = None) -> str:
    """What the page shows for the batch: the stage and the ISO week it was queued in."""
    year, week, _ = (now or dt.datetime.now(dt.UTC)).isocalendar()
    return f"{stage} {year}-W{week:02d}"


def labels_by_pair(labels: list[dict]) -> dict[str, list[dict]]:
    """The store's current labels grouped by pair, earliest labeller first."""
    out: dict[str, list[dict]] = {}
    for lab in sorted(labels, key=lambda r: (str(r["labelled_at"]), r["annotator"])):
        out.setdefault(lab["pair_id"], []).append(lab)
    return out


class PeopleAnnotator:
    """The `Annotator` of pairs people labelled: the earliest label of a pair decides (a second
    annotator's label is for agreement, not a vote); no label -> None (pairs_unlabelled)."""

    name = "people"

    def __init__(self, labels: list[dict]):
        self.by_pair = labels_by_pair(labels)

    def judge(self, prompt: dict, a: str, b: str, rng: random.Random) -> Judgement | None:
        got = self.by_pair.get(pair_id(prompt))
        if not got:
            return None
        lab = got[0]
        return Judgement(
            preferred=lab["preferred"],
            rating=lab["rating"],
            kind="safety" if prompt["is_safety"] else "helpfulness",
            score_a=None,
            score_b=None,
            # a helpfulness pair has no safety labels: both responses count as safe
            safe_a=True if lab["safe_a"] is None else bool(lab["safe_a"]),
            safe_b=True if lab["safe_b"] is None else bool(lab["safe_b"]),
            flipped=False,
            by=PERSON + lab["annotator"],
        )


def labels_digest(labels: list[dict]) -> str:
    """A hash of the labels (cache key of the step that turns them into rows)."""
    key = sorted(
        (
            r["pair_id"],
            r["annotator"],
            r["revision"],
            r["preferred"],
            r["rating"],
            r["safe_a"],
            r["safe_b"],
        )
        for r in labels
    )
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()
