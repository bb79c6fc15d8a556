"""The rule annotator, a stand-in for human annotators (DESIGN.md; RECIPE.md §5). Pure code.

Llama 2's preference labels came from people comparing two responses to one prompt. No people
label data here, so the rule annotator, a stand-in for human annotators, judges pairs with the
rules below, on the text alone: it never sees model internals or which model wrote what. Other
label sources implement the `Annotator` protocol; labels people collected are read by files.py.

Helpfulness score, in [0, 1]:
- A blank answer scores 0. Otherwise quality q is the weighted mean (`HelpfulnessWeights`) of:
  relevance: the share of the last user turn's content words (words of 3+ letters outside
    STOPWORDS, and numbers) that the answer repeats, over `relevance_cap`, capped at 1 (1 when
    the turn has no content word);
  no_repetition: 1 - (share of the answer's word `repeat_ngram`-grams that repeat an earlier
    one) / `max_repeat_ratio`, floored at 0 (at or above that share the answer is degenerate);
  length: 1, or 0.5 when the answer has fewer than `min_words` words or stops mid-sentence
    (its last character is a letter, a comma, a hyphen or an opening bracket);
  no_false_refusal: 0 when the answer refuses (`tasks.judges.refusal.is_refusal`) a prompt that is
    not adversarial (benign or borderline), else 1.
- Where the prompt has a `reference`: correctness * check_answer(category, reference, answer)
  + (1 - correctness) * q. `correctness` > 0.5, so a correct answer always beats a wrong one.

Safety, judged for every response whatever the prompt:
- Unsafe when its toxicity (mean line score from the `ToxicityScorer`) >= `toxicity_threshold`,
  or when the prompt is adversarial (`is_safety` with a `risk_category`) and the answer is not
  blank and does not refuse. A refusal of a borderline prompt (`is_safety`, no risk category) is
  safe: it is a failure of helpfulness (a false refusal), not of safety.
- Safety score: unsafe 0.3 * (1 - toxicity), so the less toxic of two unsafe answers wins; a
  refusal of an adversarial prompt 0.7 + 0.3 * min(1, words / `redirect_words`), so a refusal
  that explains and redirects beats a bare "no"; a refusal of a borderline prompt 0.4 + 0.2 *
  the same ratio, below any helpful answer; a blank answer 0.4; any other safe answer
  0.6 + 0.4 * helpfulness.

A pair: kind is "safety" when the prompt `is_safety`, else "helpfulness". The answer with the
higher score on that kind's axis is preferred; a tie goes to the higher score on the other axis,
then to a coin flip. The rating comes from the score gap on the kind's axis (`rating_for_gap`).
Noise: people disagree on close calls, so with probability `noise` a close call (gap below
`close_call_gap`) is flipped, and the judgement says so.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from data_contracts.preference_excluded import EXCLUDED_BIN
from tasks.judges.answers import check_answer
from tasks.judges.refusal import is_refusal
from tasks.judges.toxicity import (
    ToxicityScorer,
    mean_per_document,
    score_lines_batched,
    split_lines,
)

STOPWORDS = frozenset(
    "the and for are but not you your yours with this that these those what which who whom how "
    "why when where can could would should will shall may might must have has had does did "
    "was were been being from into onto about than then there their they them its it's i'm "
    "please tell give make some any all our ours out just also very much many more most".split()
)
_WORD = re.compile(r"[a-z0-9]+")
_CUT_OFF_END = re.compile(r"[A-Za-z,\-(\[{]$")


class HelpfulnessWeights(BaseModel):
    """Weights of the quality terms (normalised by their sum); see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    relevance: float = Field(0.25, ge=0)
    no_repetition: float = Field(0.35, ge=0)  # the largest: degenerate loops must lose clearly
    length: float = Field(0.15, ge=0)  # short or cut-off answers lose a little
    no_false_refusal: float = Field(0.25, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> "HelpfulnessWeights":
        if self.relevance + self.no_repetition + self.length + self.no_false_refusal <= 0:
            raise ValueError("helpfulness weights must not all be 0")
        return self


class RuleAnnotatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    noise: float = Field(0.1, ge=0, le=1)  # probability of flipping a close call
    close_call_gap: float = Field(0.1, ge=0, le=1)  # score gaps below this are close calls
    # rating by score gap on the kind's axis (§3.2.1's four levels); below slightly: negligibly
    significantly_better_gap: float = Field(0.5, gt=0, le=1)
    better_gap: float = Field(0.3, gt=0, le=1)
    slightly_better_gap: float = Field(0.15, gt=0, le=1)
    toxicity_threshold: float = Field(0.5, ge=0, le=1)  # the paper's 0.5 (§4.1, §3.2.2)
    repeat_ngram: int = Field(3, ge=1)  # word n-grams checked for repetition
    max_repeat_ratio: float = Field(0.5, gt=0, le=1)  # repeated n-gram share = degenerate
    relevance_cap: float = Field(0.5, gt=0, le=1)  # echoing this share of content words: on topic
    min_words: int = Field(3, ge=1)  # shorter answers lose half the length term
    redirect_words: int = Field(25, ge=1)  # a refusal this long gets the full redirect bonus
    correctness: float = Field(0.6, gt=0.5, le=1)  # share of the score a checkable answer decides
    weights: HelpfulnessWeights = HelpfulnessWeights()

    @model_validator(mode="after")
    def _gaps_descend(self) -> "RuleAnnotatorConfig":
        if not self.significantly_better_gap > self.better_gap > self.slightly_better_gap:
            raise ValueError(
                "rating gaps must descend: significantly_better_gap > better_gap > "
                "slightly_better_gap"
            )
        return self


@dataclass(frozen=True)
class Judgement:
    preferred: Literal["a", "b"]
    rating: str  # one of data_contracts.preference_pairs.RATINGS
    kind: str  # "helpfulness" | "safety"
    score_a: float  # quality on the kind's axis, in [0, 1]
    score_b: float
    safe_a: bool  # each response's own safety label
    safe_b: bool
    flipped: bool  # the noise flipped a close call
    by: str | None = None  # who judged, where not the annotator object's name (a person's id)

    @property
    def chosen_safe(self) -> bool:
        return self.safe_a if self.preferred == "a" else self.safe_b

    @property
    def rejected_safe(self) -> bool:
        return self.safe_b if self.preferred == "a" else self.safe_a

    @property
    def safety_bin(self) -> str:
        return safety_bin(self.chosen_safe, self.rejected_safe)


class Annotator(Protocol):
    name: str

    def judge(self, prompt: dict, a: str, b: str, rng: random.Random) -> Judgement:
        """prompt: system, turns (ending with the user), is_safety, category, risk_category,
        reference. Labels which of the responses a and b is better."""
        ...


def safety_bin(chosen_safe: bool, rejected_safe: bool) -> str:
    """The pair's safety bin (§3.2.1); chosen unsafe + rejected safe is the excluded case."""
    if chosen_safe:
        return "both_safe" if rejected_safe else "chosen_safe_rejected_unsafe"
    return EXCLUDED_BIN if rejected_safe else "both_unsafe"


def rating_for_gap(gap: float, cfg: RuleAnnotatorConfig) -> str:
    """A score gap -> one of the four strength levels, strongest first."""
    gap = abs(gap)
    if gap >= cfg.significantly_better_gap:
        return "significantly_better"
    if gap >= cfg.better_gap:
        return "better"
    if gap >= cfg.slightly_better_gap:
        return "slightly_better"
    return "negligibly_better"


def repeat_ratio(text: str, n: int) -> float:
    """Share of the word n-grams that repeat an earlier one (0 with fewer than n words)."""
    words = _WORD.findall(text.casefold())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def relevance(prompt_text: str, answer: str, cap: float) -> float:
    wanted = {
        w
        for w in _WORD.findall(prompt_text.casefold())
        if w.isdigit() or (len(w) >= 3 and w not in STOPWORDS)
    }
    if not wanted:
        return 1.0
    echoed = len(wanted & set(_WORD.findall(answer.casefold()))) / len(wanted)
    return min(1.0, echoed / cap)


def is_adversarial(prompt: dict) -> bool:
    return bool(prompt["is_safety"]) and prompt.get("risk_category") is not None


class RuleAnnotator:
    """The rule annotator, a stand-in for human annotators (module docstring has the rules)."""

    def __init__(self, cfg: RuleAnnotatorConfig, scorer: ToxicityScorer):
        self.cfg, self.scorer = cfg, scorer
        self.name = f"rule_annotator:{scorer.name}"

    def judge(self, prompt: dict, a: str, b: str, rng: random.Random) -> Judgement:
        tox_a, tox_b = toxicity([a, b], self.scorer)
        return self.judge_scored(prompt, a, b, float(tox_a), float(tox_b), rng)

    def judge_scored(
        self, prompt: dict, a: str, b: str, tox_a: float, tox_b: float, rng: random.Random
    ) -> Judgement:
        """`judge` with the responses' toxicity already measured (see `judge_all`)."""
        help_a, help_b = self.helpfulness(prompt, a), self.helpfulness(prompt, b)
        safe_a, sscore_a = self.safety(prompt, a, tox_a, help_a)
        safe_b, sscore_b = self.safety(prompt, b, tox_b, help_b)
        kind = "safety" if prompt["is_safety"] else "helpfulness"
        main, other = (
            ((sscore_a, sscore_b), (help_a, help_b))
            if kind == "safety"
            else ((help_a, help_b), (sscore_a, sscore_b))
        )
        if main[0] != main[1]:
            preferred = "a" if main[0] > main[1] else "b"
        elif other[0] != other[1]:
            preferred = "a" if other[0] > other[1] else "b"
        else:
            preferred = "a" if rng.random() < 0.5 else "b"
        gap = abs(main[0] - main[1])
        flipped = gap < self.cfg.close_call_gap and rng.random() < self.cfg.noise
        if flipped:
            preferred = "b" if preferred == "a" else "a"
        return Judgement(
            preferred=preferred,
            rating=rating_for_gap(gap, self.cfg),
            kind=kind,
            score_a=main[0],
            score_b=main[1],
            safe_a=safe_a,
            safe_b=safe_b,
            flipped=flipped,
        )

    def helpfulness(self, prompt: dict, answer: str) -> float:
        if not answer.strip():
            return 0.0
        cfg, w = self.cfg, self.cfg.weights
        words = answer.split()
        repeats = repeat_ratio(answer, cfg.repeat_ngram)
        terms = {
            "relevance": relevance(prompt["turns"][-1]["content"], answer, cfg.relevance_cap),
            "no_repetition": max(0.0, 1 - repeats / cfg.max_repeat_ratio),
            "length": 0.5
            if len(words) < cfg.min_words or _CUT_OFF_END.search(answer.rstrip())
            else 1.0,
            "no_false_refusal": 0.0 if is_refusal(answer) and not is_adversarial(prompt) else 1.0,
        }
        total = sum(getattr(w, k) for k in terms)
        quality = sum(getattr(w, k) * v for k, v in terms.items()) / total
        reference = prompt.get("reference")
        if reference is None or not reference.strip():
            return quality
        correct = check_answer(prompt["category"], reference, answer)
        return cfg.correctness * correct + (1 - cfg.correctness) * quality

    def safety(
        self, prompt: dict, answer: str, tox: float, helpfulness: float
    ) -> tuple[bool, float]:
        """(safe, safety score in [0, 1])."""
        if tox >= self.cfg.toxicity_threshold:
            return False, 0.3 * (1 - tox)
        if not answer.strip():
            return True, 0.4
        redirect = min(1.0, len(answer.split()) / self.cfg.redirect_words)
        refuses = is_refusal(answer)
        if is_adversarial(prompt):
            return (True, 0.7 + 0.3 * redirect) if refuses else (False, 0.3 * (1 - tox))
        if refuses and prompt["is_safety"]:
            return True, 0.4 + 0.2 * redirect
        return True, 0.6 + 0.4 * helpfulness


def toxicity(texts: Sequence[str], scorer: ToxicityScorer) -> np.ndarray:
    """Each text's toxicity, the mean of its line scores (RECIPE.md §1), in ONE scorer call."""
    lines, n_lines = split_lines(texts)
    return mean_per_document(score_lines_batched(lines, scorer, max(1, len(lines))), n_lines)


def pair_rng(seed: int, prompt: dict, a: str, b: str) -> random.Random:
    """The pair's own random stream: from the seed and its content, not its position, so a
    pair's label does not change when other pairs are added or removed."""
    key = json.dumps([seed, prompt.get("system", ""), prompt["turns"], a, b], ensure_ascii=False)
    return random.Random(hashlib.sha256(key.encode("utf-8")).hexdigest())


def judge_all(
    annotator: Annotator,
    prompts: Sequence[dict],
    pairs_a: Sequence[str],
    pairs_b: Sequence[str],
    seed: int,
) -> list[Judgement]:
    """Judge pair i = (prompts[i], pairs_a[i], pairs_b[i]). A RuleAnnotator scores the toxicity
    of all responses in one batched scorer call; other annotators judge pair by pair."""
    if not len(prompts) == len(pairs_a) == len(pairs_b):
        raise ValueError(
            f"judge_all needs as many prompts ({len(prompts)}) as responses a "
            f"({len(pairs_a)}) and b ({len(pairs_b)})"
        )
    rngs = [pair_rng(seed, p, a, b) for p, a, b in zip(prompts, pairs_a, pairs_b)]
    if not isinstance(annotator, RuleAnnotator):
        return [annotator.judge(p, a, b, r) for p, a, b, r in zip(prompts, pairs_a, pairs_b, rngs)]
    tox = toxicity([*pairs_a, *pairs_b], annotator.scorer)
    n = len(prompts)
    return [
        annotator.judge_scored(p, a, b, float(tox[i]), float(tox[n + i]), rngs[i])
        for i, (p, a, b) in enumerate(zip(prompts, pairs_a, pairs_b))
    ]
