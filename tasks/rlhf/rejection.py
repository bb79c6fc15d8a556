"""Rejection sampling (RECIPE.md §7, paper §3.2.3 and Fig. 7), as pure functions over rows.

A round draws K responses per prompt from its starting policy, scores each with the round's
refreshed reward models, and fine-tunes on the best response per prompt (highest gated reward
R_c). Until round `rs_pool_from` the pick is among this round's K samples only; from then on a
prompt's best samples of all earlier rounds compete too, re-scored by this round's RMs (the
paper added this at RLHF-V4 after V3 regressed on some capabilities). Rows follow the
`rejection_samples` contract.

Fig. 7: for N = 1..K, the maximum and the median of R_c over the first N samples of a prompt,
averaged over prompts. The gap between the two is the head-room rejection sampling exploits:
the maximum grows with N while the median stays flat.

Cut-off answers: a response that hit `max_new_tokens` before EOS (`ended` False) is scored
without EOS and can never be the best of its prompt while an ended response exists. When all of
a prompt's responses were cut off, the best of them is still picked (as before cut-offs were
known), logged by prompt id and counted (`prompts_all_cut_off`): a small or early model that
never stops within `max_new_tokens` (the tiny preset: nearly every sample) would otherwise have
nothing to fine-tune on. Fig. 7 counts every sample: it measures the reward, not the pick.

Agreement with the rule annotator (`annotator_agreement`): each round also scores its samples
with the annotator, which the pick never sees, and logs whether the RMs' pick is better by that
judge than a random sample, and how close it comes to the judge's own best. On the demo the
pick was barely better than a random sample on helpfulness prompts (issue 15), the first place
to look when the RMs' win rate rises while the annotator's falls.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

from tasks.plots import figure_png, pyplot


def mark_best(rows: list[dict]) -> list[dict]:
    """Copies of `rows` with `is_best` set: per (round, prompt_id), the row with the highest
    r_c among the rows that ended at EOS (`ended`; a row without the key counts as ended), or
    among all its rows when every one was cut off (`all_cut_off` names those prompts); ties go
    to the earliest (origin_round, sample), so the pick is reproducible."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[(r["round"], r["prompt_id"])].append(i)
    for key, idx in groups.items():
        ended = [i for i in idx if rows[i].get("ended", True)]
        groups[key] = ended or idx
    best = {
        min(idx, key=lambda i: (-rows[i]["r_c"], rows[i]["origin_round"], rows[i]["sample"]))
        for idx in groups.values()
    }
    return [{**r, "is_best": i in best} for i, r in enumerate(rows)]


def all_cut_off(rows: list[dict]) -> list[str]:
    """The prompt ids (sorted) none of whose rows ended at EOS: their best row is cut off."""
    ended: dict[tuple, bool] = defaultdict(bool)
    for r in rows:
        ended[(r["round"], r["prompt_id"])] |= bool(r.get("ended", True))
    return sorted(prompt for (_, prompt), e in ended.items() if not e)


def cutoff_share(rows: list[dict]) -> float:
    """The share of `rows` cut off at max_new_tokens (0.0 for no rows)."""
    return sum(not r.get("ended", True) for r in rows) / len(rows) if rows else 0.0


def pooled_candidates(
    round_: int, earlier_best: list[dict], prompt_ids: set[str], rs_pool_from: int
) -> list[dict]:
    """The earlier rounds' best rows that join round `round_`'s pick: none before
    `rs_pool_from`; from then on every earlier round's best row of a prompt this round samples,
    with `round` set to this round (the caller re-scores them with this round's RMs)."""
    if round_ < rs_pool_from:
        return []
    out = []
    for r in earlier_best:
        if not r["is_best"] or r["round"] >= round_ or r["prompt_id"] not in prompt_ids:
            continue
        out.append({**r, "round": round_})
    # one row per (prompt, origin): a prompt's pooled best of round 2 appears in round 3's rows
    # (as origin 2) and again as round 3's best only if it won there; dedupe on the text's origin
    seen, unique = set(), []
    for r in out:
        key = (r["prompt_id"], r["origin_round"], r["sample"])
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def annotator_agreement(rows: list[dict], scores: Sequence[float]) -> dict[str, float]:
    """How well the RMs' pick agrees with the rule annotator, whose score `scores[i]` of row i
    the optimisation never sees (a measurement, not a selection). Per prompt axis (`helpfulness`:
    rows with is_safety False, i.e. scored by R_h; `safety`: the others), over prompts:

    - `pick`: the annotator's mean score of the picked rows (`is_best`, pooled ones included);
    - `sample`: its mean score of the round's own samples, what a random pick gets on average;
    - `best`: the mean of each prompt's highest score, what a perfect judge would pick;
    - `concordance`: of the pairs of own samples of one prompt that the annotator tells apart,
      the share R_c orders the same way (R_c ties count half; 0.5 is chance). Left out when
      no pair differs.

    `pick` at or below `sample` means rejection sampling fine-tunes on answers the judge finds
    no better than a random sample."""
    if len(scores) != len(rows):
        raise ValueError(f"{len(scores)} annotator scores for {len(rows)} rows; give one per row")
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        axis = "safety" if r["is_safety"] else "helpfulness"
        groups[(axis, r["prompt_id"])].append(i)
    out: dict[str, float] = {}
    for axis in ("helpfulness", "safety"):
        picks, samples, bests, agree, pairs = [], [], [], 0.0, 0
        for (a, _), idx in groups.items():
            if a != axis:
                continue
            own = [i for i in idx if rows[i]["origin_round"] == rows[i]["round"]]
            picks += [scores[i] for i in idx if rows[i]["is_best"]]
            if own:
                samples.append(statistics.fmean(scores[i] for i in own))
            bests.append(max(scores[i] for i in idx))
            for j, i in enumerate(own):
                for k in own[j + 1 :]:
                    if scores[i] == scores[k]:
                        continue
                    pairs += 1
                    rc, rk = rows[i]["r_c"], rows[k]["r_c"]
                    agree += 0.5 if rc == rk else float((rc > rk) == (scores[i] > scores[k]))
        if not bests:
            continue
        out[f"{axis}.prompts"] = float(len(bests))
        if picks:
            out[f"{axis}.pick"] = statistics.fmean(picks)
        if samples:
            out[f"{axis}.sample"] = statistics.fmean(samples)
        out[f"{axis}.best"] = statistics.fmean(bests)
        if pairs:
            out[f"{axis}.concordance"] = agree / pairs
    return out


def best_of_n_curve(rows: list[dict]) -> list[dict]:
    """Fig. 7 rows {n, max, median, prompts} for N = 1..K from the rows drawn in their own round
    (origin_round == round), per prompt in `sample` order; prompts with fewer than N samples
    do not count at N."""
    by_prompt: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if r["origin_round"] == r["round"]:
            by_prompt[(r["round"], r["prompt_id"])].append((r["sample"], r["r_c"]))
    scores = [[s for _, s in sorted(v)] for v in by_prompt.values()]
    k = max((len(s) for s in scores), default=0)
    curve = []
    for n in range(1, k + 1):
        firsts = [s[:n] for s in scores if len(s) >= n]
        curve.append(
            {
                "n": n,
                "max": statistics.fmean(max(f) for f in firsts),
                "median": statistics.fmean(statistics.median(f) for f in firsts),
                "prompts": len(firsts),
            }
        )
    return curve


def curve_png(
    curves: dict[str, list[dict]], title: str = "Rejection sampling: R_c over N samples"
) -> bytes:
    """One line pair (max solid, median dashed) per curve label, as PNG bytes (paper Fig. 7)."""
    fig, ax = pyplot().subplots(figsize=(6, 4))
    for i, (label, curve) in enumerate(curves.items()):
        color = f"C{i}"
        n = [c["n"] for c in curve]
        ax.plot(n, [c["max"] for c in curve], "-o", color=color, markersize=3, label=f"{label} max")
        ax.plot(n, [c["median"] for c in curve], "--", color=color, label=f"{label} median")
    ax.set_xlabel("N samples")
    ax.set_ylabel("mean R_c (sigmoid)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)
