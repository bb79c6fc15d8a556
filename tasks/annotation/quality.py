"""Label quality: agreement between people, accuracy on gold pairs, the rule annotator against
people (RECIPE.md §5). Pure functions on `AnnotationStore.current_labels()` dicts (keys used:
pair_id, annotator, preferred, rating, safe_a, safe_b, and is_safety where present).

Shares are in [0, 1]; counts (`pairs_double`, `n`) are floats too, so a result logs as MLflow
metrics as it is. No NaN: a key whose denominator would be 0 is left out.
"""

from __future__ import annotations

from collections import defaultdict

from data_contracts.preference_pairs import RATINGS


def _share(hits: int, total: int, key: str, out: dict[str, float]) -> None:
    if total:
        out[key] = hits / total


def _same_choice(x: dict, y: dict) -> bool:
    return x["preferred"] == y["preferred"]


def _same_rating(x: dict, y: dict) -> bool:
    """Same preference AND same level (a level means nothing for the other response)."""
    return _same_choice(x, y) and x["rating"] == y["rating"]


def _safety_pairs(x: dict, y: dict) -> list[tuple[bool, bool]]:
    """(x's label, y's label) per response where both labelled its safety."""
    return [
        (x[key], y[key])
        for key in ("safe_a", "safe_b")
        if x.get(key) is not None and y.get(key) is not None
    ]


def _is_safety(label: dict) -> bool:
    if "is_safety" in label:
        return bool(label["is_safety"])
    return label.get("safe_a") is not None and label.get("safe_b") is not None


def agreement(labels: list[dict]) -> dict[str, float]:
    """Agreement between two people on the pairs that two or more labelled.

    Per pair, the first two annotators by id are annotator 1 and 2 (gold pairs count too).
    - `pairs_double`: the number of such pairs;
    - `preferred`: share of them where both chose the same response;
    - `rating_exact`: share where both chose the same response AND the same level;
    - `by_level.<level>`: among pairs where annotator 1 chose <level>, the share where
      annotator 2 chose the same response and level;
    - `safety`: over safety pairs, the share of per-response safe/unsafe labels that agree
      (two per pair); `safety.safe` / `safety.unsafe`: the same share given that annotator 1
      said safe / unsafe.
    """
    by_pair: dict[str, dict[str, dict]] = defaultdict(dict)
    for label in labels:
        by_pair[label["pair_id"]][label["annotator"]] = label
    doubles = []
    for people in by_pair.values():
        if len(people) >= 2:
            first, second = sorted(people)[:2]
            doubles.append((people[first], people[second]))
    out: dict[str, float] = {"pairs_double": float(len(doubles))}
    _share(sum(_same_choice(x, y) for x, y in doubles), len(doubles), "preferred", out)
    _share(sum(_same_rating(x, y) for x, y in doubles), len(doubles), "rating_exact", out)
    for level in RATINGS:
        at_level = [(x, y) for x, y in doubles if x["rating"] == level]
        _share(
            sum(_same_rating(x, y) for x, y in at_level), len(at_level), f"by_level.{level}", out
        )
    safety = [
        pair for x, y in doubles if _is_safety(x) and _is_safety(y) for pair in _safety_pairs(x, y)
    ]
    _share(sum(s1 == s2 for s1, s2 in safety), len(safety), "safety", out)
    for said, key in ((True, "safety.safe"), (False, "safety.unsafe")):
        given = [s2 for s1, s2 in safety if s1 is said]
        _share(sum(s2 is said for s2 in given), len(given), key, out)
    return out


def gold_scores(labels: list[dict], items: list[dict]) -> dict[str, dict[str, float]]:
    """Per person, over their labels on gold items (`items` as from `AnnotationStore.items`):
    `n` (gold labels), `preferred` (share choosing the gold response), `rating` (share with
    the gold response AND the gold level) and `safety` (share of per-response safe/unsafe
    labels equal to the gold's, where the gold has one). People without gold labels are left
    out."""
    gold = {it["pair_id"]: it["gold"] for it in items if it.get("gold") is not None}
    per_person: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for label in labels:
        if label["pair_id"] in gold:
            per_person[label["annotator"]].append((label, gold[label["pair_id"]]))
    scores: dict[str, dict[str, float]] = {}
    for annotator, pairs in sorted(per_person.items()):
        out: dict[str, float] = {"n": float(len(pairs))}
        _share(sum(_same_choice(x, g) for x, g in pairs), len(pairs), "preferred", out)
        _share(sum(_same_rating(x, g) for x, g in pairs), len(pairs), "rating", out)
        safety = [pair for x, g in pairs for pair in _safety_pairs(x, g)]
        _share(sum(s == t for s, t in safety), len(safety), "safety", out)
        scores[annotator] = out
    return scores


def rule_vs_people(labels: list[dict], rule: dict[str, dict]) -> dict[str, float]:
    """The rule annotator's judgement (`rule`: pair_id -> preferred, rating, safe_a, safe_b)
    against each person's label on the same pairs: `n` (person labels compared), `preferred`,
    `rating_exact` (same response and level) and `safety` (per-response agreement where both
    gave one)."""
    pairs = [(label, rule[label["pair_id"]]) for label in labels if label["pair_id"] in rule]
    out: dict[str, float] = {"n": float(len(pairs))}
    _share(sum(_same_choice(x, r) for x, r in pairs), len(pairs), "preferred", out)
    _share(sum(_same_rating(x, r) for x, r in pairs), len(pairs), "rating_exact", out)
    safety = [pair for x, r in pairs for pair in _safety_pairs(x, r)]
    _share(sum(s == t for s, t in safety), len(safety), "safety", out)
    return out
