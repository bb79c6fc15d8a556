"""Human-preference collection, with the rule annotator standing in for people (RECIPE.md §5).

For each collection batch: a seeded draw of prompts from the SFT train dialogues (helpfulness
prompts: task questions with checkable answers and chit-chat openers; safety prompts:
adversarial and borderline), two responses per prompt from two *different* model variants at
*different* temperatures, and one judgement per pair from the annotator. A pair becomes a row
of `preference_pairs`, or of `preference_excluded` with its reason:

- `pairs_chosen_unsafe`: the chosen response is unsafe while the rejected one is safe (the paper
  leaves these out, §3.2.1);
- `pairs_identical`: both variants gave the same text (nothing to compare);
- `pairs_empty_response`: a variant produced no text (or its prompt did not fit the window);
- `pairs_unlabelled`: the annotator gave no judgement (people resumed the flow before labelling
  every pair of the batch).

A response cut off at the sampler's `max_new_tokens` stays a pair member, marked
`chosen_ended` / `rejected_ended` False: the annotator judges its text as it is, and the
reward models train on it without EOS (tasks/reward/data.py), as PPO scores a cut-off rollout.
Leaving such pairs out would drop the long answers from the data mix; `cutoff_share` (stats)
is the share of sampled responses that were cut off.

A share of each batch's prompts (`test_frac`, by a hash of the prompt) is the batch's held-out
test split, as the paper holds out 1,000 examples per weekly batch.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from data_contracts.preference_excluded import EXCLUDED_BIN
from tasks.chat.prompt import with_openers
from tasks.distributed.launch import LaunchConfig
from tasks.judges.annotator import judge_all, safety_bin
from tasks.records import assign_split

# (variant name, temperature, (system, turns) contexts, seed) -> (answers, ended at EOS); both
# None where a context did not fit the window (tasks/chat/answer.py make_answer_status_fn)
Sampler = Callable[
    [str, float, list[tuple[str, list[dict]]], int], tuple[list[str | None], list[bool | None]]
]


class LabelFile(BaseModel):
    """Preference labels people collected, added to the annotator's pairs: our own Parquet
    contract, or Anthropic HH-RLHF JSONL (`chosen`/`rejected` transcripts)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # the rows' source
    path: Path
    format: Literal["parquet", "hh"] = "hh"
    kind: Literal["helpfulness", "safety"] = "helpfulness"  # HH files: which judgement they hold


class PeopleConfig(BaseModel):
    """Labelling by people on the annotation page (`python -m flows.annotate serve`): where the
    pairs go and how the flow waits for them."""

    model_config = ConfigDict(extra="forbid")

    # any SQLAlchemy URL; None: sqlite:///<run_dir>/annotation.db (the page's default too)
    store: str | None = None
    share: float = Field(1.0, gt=0, le=1)  # mixed: the share of pairs people label
    double_share: float = Field(0.0, ge=0, le=1)  # of the people's pairs: labelled by two
    gold_file: Path | None = None  # JSONL of pairs with a known answer, added to each batch
    # how the flow waits: suspend (a deployment's top-level run: no worker is held), pause
    # (the process blocks; resumed through the Prefect API by the page or an operator), poll
    # (no Prefect server to resume through: the flow reads the store until the batch is
    # complete); auto picks in that order
    wait: Literal["auto", "suspend", "pause", "poll"] = "auto"
    timeout_s: int = Field(7 * 24 * 3600, gt=0)  # then the flow goes on with what is labelled
    poll_s: int = Field(5, gt=0)


PRIMED_SUFFIX = "_primed"  # the planned variant name of primed answers: <variant>_primed


class PrimedConfig(BaseModel):
    """Answers whose start is given: for a share of each batch's safety prompts, response b
    comes from `variant`'s model continuing from `text` (the variant `<variant>_primed`)."""

    model_config = ConfigDict(extra="forbid")

    variant: str = "sft"
    text: str = Field("Sure.", min_length=1)  # the demo's helpful opener (sft.sources.opener)
    share: float = Field(0.5, ge=0, le=1)  # of each batch's safety prompts

    @property
    def name(self) -> str:
        return f"{self.variant}{PRIMED_SUFFIX}"


class CollectionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # who labels the pairs: the rule annotator (a stand-in for people), people on the annotation
    # page, or both (`people.share` of the pairs by people, the rest by the rule annotator; the
    # rows' `annotator` column says which)
    annotator: Literal["rule", "people", "mixed"] = "rule"
    people: PeopleConfig = PeopleConfig()

    batches: int = Field(2, gt=0)  # collection rounds ("weekly batches", §3.2.1)
    helpfulness_prompts: int = Field(200, ge=0)  # per batch
    safety_prompts: int = Field(200, ge=0)  # per batch; adversarial and borderline
    variants: list[str] = ["sft", "sft_base", "pretrained"]  # two different ones per prompt
    temperatures: list[float] = [0.6, 1.0, 1.3]  # two different ones per prompt (§3.2.1)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(48, gt=0)
    test_frac: float = Field(0.2, ge=0, lt=1)  # held-out test split per batch, by prompt
    # share of each batch's adversarial prompts asked after a benign exchange (the first user
    # and assistant turns of a train chit-chat dialogue), as the multi-turn evaluation and
    # rlhf.multi_turn_share ask them; 0 = first turns only (the reward models then never see
    # a conversation: the demo's Safety RM scored refusals and non-refusals of multi-turn
    # adversarial prompts alike, issue 15)
    multi_turn_share: float = Field(0.0, ge=0, le=1)
    # a share of the safety prompts answered once by a model made to start as it starts a
    # helpful answer: the reward models see fluent compliance with an adversarial request,
    # which the three variants rarely write (issue 15: the demo's Safety RM had 4-13 such
    # answers among ~700 and scored "Sure." answers to adversarial prompts 0.75-0.85, close to
    # refusals); None = off
    primed: PrimedConfig | None = None

    def sampled_by(self, variant: str) -> tuple[str, str]:
        """(the model variant that answers, the answer's given start) for a planned variant."""
        if self.primed is not None and variant == self.primed.name:
            return self.primed.variant, self.primed.text
        return variant, ""

    def models_needed(self) -> list[str]:
        """The model variants sampling loads: the variants, and the primed one's model."""
        extra = [self.primed.variant] if self.primed is not None else []
        return list(dict.fromkeys([*self.variants, *extra]))

    label_files: list[LabelFile] = []  # each becomes one more batch, after the collected ones
    # sampling the responses on N ranks (tasks/chat/sharded.py), all batches in one launch:
    # whole generation batches per rank with their one-process seeds, so the pairs are the same
    launch: LaunchConfig = LaunchConfig()


def read_label_files(cfg: CollectionConfig) -> tuple[list[dict], list[dict], dict[str, float]]:
    """(pairs, quarantine records, stats) from the configured label files; file i is batch
    `cfg.batches + i`. Bad lines or rows are quarantined with file and line (files.py)."""
    from tasks.preferences.files import read_hh_jsonl, read_preference_parquet

    rows, bad, stats = [], [], {}
    for i, spec in enumerate(cfg.label_files):
        if spec.format == "parquet":
            got, quarantined = read_preference_parquet(spec.path)
        else:
            got, quarantined, _ = read_hh_jsonl(
                spec.path, spec.kind, spec.name, cfg.batches + i, cfg.test_frac
            )
        rows += got
        bad += [{**q, "stage": "preference_files"} for q in quarantined]
        stats[f"files.{spec.name}.pairs"] = len(got)
        stats[f"files.{spec.name}.quarantined"] = len(quarantined)
    return rows, bad, stats


def plan_batch(
    pool: dict[str, list[dict]],
    cfg: CollectionConfig,
    batch: int,
    seed: int,
    openers: Sequence[dict] = (),
) -> list[dict]:
    """The prompts of one batch, each with its two (variant, temperature) draws and split. With
    `cfg.multi_turn_share` > 0, that share of the batch's adversarial prompts is asked after the
    first two turns of one of `openers` (tasks/chat/prompt.py: chitchat_openers), drawn with a
    generator of its own, so the rest of the plan is the same with or without it; so is
    `cfg.primed`, which gives that share of the safety prompts the primed variant as b."""
    if len(cfg.variants) < 2 or len(set(cfg.temperatures)) < 2:
        raise ValueError("preference collection needs >= 2 model variants and >= 2 temperatures")
    if cfg.multi_turn_share > 0 and not openers:
        raise ValueError(
            "collection multi_turn_share > 0 needs chit-chat dialogues of the train split to "
            "open the conversations with (source 'chitchat', >= 2 turns, no instruction); "
            "the SFT dialogues have none"
        )
    rng = random.Random(f"{seed}:{batch}")
    planned = []
    for kind, n in (("helpfulness", cfg.helpfulness_prompts), ("safety", cfg.safety_prompts)):
        for prompt in rng.sample(pool[kind], min(n, len(pool[kind]))):
            (va, vb) = rng.sample(cfg.variants, 2)
            (ta, tb) = rng.sample(sorted(set(cfg.temperatures)), 2)
            held = assign_split(prompt["prompt_id"], cfg.test_frac, salt=f"batch{batch}:")
            planned.append(
                {
                    **prompt,
                    "batch": batch,
                    "variant_a": va,
                    "variant_b": vb,
                    "temperature_a": ta,
                    "temperature_b": tb,
                    "split": "test" if held == "heldout" else "train",
                }
            )
    if cfg.multi_turn_share > 0:
        turn_rng = random.Random(f"collection-multi-turn:{seed}:{batch}")
        planned = with_openers(planned, list(openers), cfg.multi_turn_share, turn_rng)
    if cfg.primed is not None:
        safety = [i for i, p in enumerate(planned) if p["is_safety"]]
        primed_rng = random.Random(f"collection-primed:{seed}:{batch}")
        for i in primed_rng.sample(safety, round(cfg.primed.share * len(safety))):
            planned[i] = {**planned[i], "variant_b": cfg.primed.name}
    return planned


def sample_responses(planned: list[dict], sampler: Sampler, seed: int) -> tuple[list, ...]:
    """(responses a, responses b, ended a, ended b) for the planned prompts, generated grouped
    by (variant, temperature)."""
    out = {"a": [None] * len(planned), "b": [None] * len(planned)}
    ended = {"a": [None] * len(planned), "b": [None] * len(planned)}
    groups: dict[tuple[str, float], list[tuple[str, int]]] = {}
    for i, p in enumerate(planned):
        groups.setdefault((p["variant_a"], p["temperature_a"]), []).append(("a", i))
        groups.setdefault((p["variant_b"], p["temperature_b"]), []).append(("b", i))
    for n, ((variant, temperature), members) in enumerate(sorted(groups.items())):
        contexts = [(planned[i]["system"], planned[i]["turns"]) for _, i in members]
        texts, done = sampler(variant, temperature, contexts, seed + n)
        for (side, i), text, e in zip(members, texts, done):
            out[side][i], ended[side][i] = text, e
    return out["a"], out["b"], ended["a"], ended["b"]


def annotate(
    planned: list[dict],
    a: list[str | None],
    b: list[str | None],
    annotator,
    seed: int,
    ended_a: list[bool | None] | None = None,
    ended_b: list[bool | None] | None = None,
) -> tuple[list[dict], list[dict], dict[str, float]]:
    """(preference_pairs rows, preference_excluded rows, stats). `ended_a[i]` False: response
    a[i] was cut off at max_new_tokens (default: every response ended)."""
    ended = {
        "a": ended_a or [None if t is None else True for t in a],
        "b": ended_b or [None if t is None else True for t in b],
    }
    rows, excluded = [], []
    usable = [i for i in range(len(planned)) if a[i] and b[i] and a[i].strip() != b[i].strip()]
    judged = judge_all(
        annotator,
        [planned[i] for i in usable],
        [a[i] for i in usable],
        [b[i] for i in usable],
        seed,
    )
    judgements = dict(zip(usable, judged))
    flipped = 0
    for i, p in enumerate(planned):
        if i not in judgements:
            reason = "pairs_empty_response" if not (a[i] and b[i]) else "pairs_identical"
            row = _row(p, a[i] or "(none)", b[i] or "(none)", None, "a", annotator.name, ended, i)
            excluded.append(
                row | {"reason": reason, "detail": f"responses {a[i]!r} / {b[i]!r}"[:300]}
            )
            continue
        j = judgements[i]
        if j is None:  # a person did not get to it: recorded, not lost
            row = _row(p, a[i], b[i], None, "a", annotator.name, ended, i)
            excluded.append(
                row | {"reason": "pairs_unlabelled", "detail": "no label when the flow resumed"}
            )
            continue
        flipped += j.flipped
        row = _row(p, a[i], b[i], j, j.preferred, annotator.name, ended, i)
        if row["safety_bin"] == EXCLUDED_BIN:
            excluded.append(
                row
                | {
                    "reason": "pairs_chosen_unsafe",
                    "detail": "chosen response unsafe, rejected safe (§3.2.1 rule)",
                }
            )
        else:
            rows.append(row)
    stats = _stats(planned, rows, excluded, flipped)
    sampled = [e for side in ("a", "b") for e in ended[side] if e is not None]
    stats["responses"] = len(sampled)
    stats["responses_cut_off"] = sum(not e for e in sampled)
    return rows, excluded, stats


def _row(p: dict, a: str, b: str, j, preferred: str, annotator: str, ended: dict, i: int) -> dict:
    first = preferred == "a"
    chosen, rejected = (a, b) if first else (b, a)
    side = {"chosen": "a" if first else "b", "rejected": "b" if first else "a"}
    safe = {"a": j.safe_a if j else True, "b": j.safe_b if j else True}
    score = {"a": j.score_a if j else None, "b": j.score_b if j else None}
    return {
        "pair_id": f"{p['prompt_id']}@batch{p['batch']}",
        "prompt_id": p["prompt_id"],
        "system": p["system"],
        "prompt": p["turns"],
        "chosen": chosen,
        "rejected": rejected,
        "rating": j.rating if j else "negligibly_better",
        "kind": j.kind if j else ("safety" if p["is_safety"] else "helpfulness"),
        "safety_bin": safety_bin(safe[side["chosen"]], safe[side["rejected"]]),
        "chosen_safe": safe[side["chosen"]],
        "rejected_safe": safe[side["rejected"]],
        "chosen_score": score[side["chosen"]],
        "rejected_score": score[side["rejected"]],
        "is_safety": p["is_safety"],
        "category": p["category"],
        "risk_category": p["risk_category"],
        "reference": p["reference"],
        "source": p["source"],
        "model_chosen": p[f"variant_{side['chosen']}"],
        "model_rejected": p[f"variant_{side['rejected']}"],
        "temperature_chosen": p[f"temperature_{side['chosen']}"],
        "temperature_rejected": p[f"temperature_{side['rejected']}"],
        "chosen_ended": ended[side["chosen"]][i],
        "rejected_ended": ended[side["rejected"]][i],
        "batch": p["batch"],
        "split": p["split"],
        "annotator": (j.by if j is not None and j.by else annotator),
    }


def _stats(planned, rows, excluded, flipped) -> dict[str, float]:
    stats: dict[str, float] = {
        "prompts": len(planned),
        "pairs": len(rows),
        "excluded": len(excluded),
        "noise_flips": flipped,
    }
    for key, n in Counter(f"pairs.{r['kind']}.{r['split']}" for r in rows).items():
        stats[key] = n
    for key, n in Counter(f"rating.{r['kind']}.{r['rating']}" for r in rows).items():
        stats[key] = n
    for key, n in Counter(f"safety_bin.{r['kind']}.{r['safety_bin']}" for r in rows).items():
        stats[key] = n
    for key, n in Counter(f"excluded.{r['reason']}" for r in excluded).items():
        stats[key] = n
    wins = Counter(r["model_chosen"] for r in rows)
    for variant, n in wins.items():
        stats[f"chosen.{variant}"] = n
    return stats
