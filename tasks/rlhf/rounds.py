"""Pure helpers of the RLHF rounds (RECIPE.md §7): the prompt sets of a run, rejection-sampling
rows and the best sample per prompt, and the per-round table and figure. No Prefect or MLflow."""

from __future__ import annotations

import random

import numpy as np
import polars as pl

from tasks.chat.prompt import chitchat_openers, prompt_pool, with_openers
from tasks.plots import figure_png, pyplot
from tasks.rlhf.config import RlhfConfig
from tasks.training.finetune import answer_examples


def _draw(
    pool: dict[str, list[dict]], counts, rng: random.Random, exclude: set[str] = frozenset()
) -> list[dict]:
    out = []
    for kind in ("helpfulness", "safety"):
        candidates = [p for p in pool[kind] if p["prompt_id"] not in exclude]
        out += rng.sample(candidates, min(getattr(counts, kind), len(candidates)))
    return out


def prompt_sets(dialogues: list[dict], cfg: RlhfConfig, seed: int) -> dict[str, list[dict]]:
    """The stage's prompt sets, seeded: `rs` (rejection sampling, the same every round), `ppo`
    and `validation` (PPO early stopping; disjoint from `ppo`) from the SFT train dialogues;
    `eval` (the per-round table) from the held-out ones, unseen by any training. With
    `multi_turn_share` > 0, that share of the training sets' adversarial prompts is asked after a
    benign exchange (`with_openers`; `multi_turn_borderline_share`: borderline ones). With
    `borderline_reward: helpfulness`, borderline prompts come untagged (`as_helpfulness`)."""
    train, heldout = prompt_pool(dialogues, "train"), prompt_pool(dialogues, "heldout")
    rng = random.Random(f"rlhf:{seed}")
    rs = _draw(train, cfg.rejection.prompts, rng)
    ppo = _draw(train, cfg.ppo_prompts, rng)
    validation = _draw(train, cfg.validation_prompts, rng, exclude={p["prompt_id"] for p in ppo})
    sets = {
        "rs": rs,
        "ppo": ppo,
        "validation": validation,
        "eval": _draw(heldout, cfg.evaluation.prompts, rng),
    }
    # one generator per kind, so each kind's draw is the same with or without the other
    shares = {"adversarial": cfg.multi_turn_share, "borderline": cfg.multi_turn_borderline_share}
    openers = chitchat_openers(dialogues, "train") if any(shares.values()) else []
    for kind, share in shares.items():
        if share > 0:
            salt = "" if kind == "adversarial" else f":{kind}"
            turn_rng = random.Random(f"rlhf-multi-turn:{seed}{salt}")
            for name in ("rs", "ppo", "validation"):
                sets[name] = with_openers(sets[name], openers, share, turn_rng, kind)
    if cfg.borderline_reward == "helpfulness":
        sets = {name: [as_helpfulness(p) for p in ps] for name, ps in sets.items()}
    return sets


def as_helpfulness(prompt: dict) -> dict:
    """A borderline prompt (safety-tagged, no risk category) untagged, so the gated reward scores
    it with R_h (the R_s < 0.15 gate still applies); any other prompt as it is.

    Why (issue 15): the Safety RM of a small model cannot tell a borderline prompt from an
    adversarial one, scores a refusal as the safest answer to both, and rejection sampling then
    picks refusals of benign prompts (measured on the demo with the paper's gate: 33 -> 42 ->
    92 % of the borderline best samples refused over V1-V3, run D in README "Helpful and safe")."""
    if prompt["is_safety"] and not prompt["risk_category"]:
        return {**prompt, "is_safety": False}
    return prompt


def sample_rows(
    round_: int, prompts: list[dict], answers: list[list[str | None]], temperature: float
) -> tuple[list[dict], int]:
    """Rows for the K answers of each prompt (sample k = answers[k]); prompts whose context does
    not fit the window (answer None) are left out and counted."""
    rows, skipped = [], 0
    for i, p in enumerate(prompts):
        texts = [answers[k][i] for k in range(len(answers))]
        if any(t is None for t in texts):
            skipped += 1
            continue
        for k, text in enumerate(texts):
            rows.append(
                {
                    "round": round_,
                    "prompt_id": p["prompt_id"],
                    "system": p["system"],
                    "prompt": p["turns"],
                    "is_safety": p["is_safety"],
                    "category": p["category"],
                    "risk_category": p["risk_category"],
                    "reference": p["reference"],
                    "sample": k,
                    "response": text,
                    "temperature": temperature,
                    "origin_round": round_,
                    "is_best": False,
                }
            )
    return rows, skipped


def as_prompt(row: dict) -> dict:
    return {**row, "turns": row["prompt"]}


def best_examples(samples: pl.DataFrame, processor, seq_len: int) -> tuple[pl.DataFrame, dict]:
    """The best row per prompt as a chat training example (see `answer_examples`); a best
    answer that was cut off (all K samples were) is trained without a closing EOS."""
    ended = "ended" if "ended" in samples.columns else None
    return answer_examples(
        samples.filter(pl.col("is_best")).to_dicts(), processor, seq_len, "response", ended
    )


def version_rows(
    name: str,
    order: int,
    prompts: list[dict],
    answers: list[str],
    scores: dict,
    kl: list,
    annot: np.ndarray,
    wins: np.ndarray,
) -> list[dict]:
    return [
        {
            "version": name,
            "order": order,
            "prompt_id": p["prompt_id"],
            "kind": "safety" if p["is_safety"] else "helpfulness",
            "category": p["category"],
            "risk_category": p["risk_category"],
            "answer": a,
            "r_h": float(scores["r_h"][i]),
            "r_s": float(scores["r_s"][i]),
            "r_c": float(scores["r_c"][i]),
            "kl_to_sft": kl[i],
            "annotator_score": float(annot[i]),
            "win_vs_sft": float(wins[i]),
        }
        for i, (p, a) in enumerate(zip(prompts, answers))
    ]


def rounds_table(rows: pl.DataFrame) -> pl.DataFrame:
    """Per version: mean R_c, R_h, R_s, mean KL to SFT, and the annotator's helpfulness and safety
    win rates against SFT (ties half), on the held-out prompts."""
    return (
        rows.group_by("version", "order")
        .agg(
            pl.col("r_c").mean().alias("mean_r_c"),
            pl.col("r_h").mean().alias("mean_r_h"),
            pl.col("r_s").mean().alias("mean_r_s"),
            pl.col("kl_to_sft").mean().alias("kl_to_sft"),
            pl.col("win_vs_sft")
            .filter(pl.col("kind") == "helpfulness")
            .mean()
            .alias("helpfulness_win_rate"),
            pl.col("win_vs_sft").filter(pl.col("kind") == "safety").mean().alias("safety_win_rate"),
            pl.len().alias("prompts"),
        )
        .sort("order")
        .drop("order")
    )


def rounds_png(table: pl.DataFrame) -> bytes:
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(10, 4))
    x = list(range(table.height))
    for col in ("mean_r_c", "mean_r_h", "mean_r_s", "helpfulness_win_rate", "safety_win_rate"):
        left.plot(x, table[col].to_list(), "-o", label=col)
    left.set_xticks(x, table["version"].to_list())
    left.set_title("Held-out prompts, per model version")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.plot(x, table["kl_to_sft"].fill_null(0).to_list(), "-o", color="C5")
    right.set_xticks(x, table["version"].to_list())
    right.set_title("Mean per-token KL to the SFT model")
    right.grid(alpha=0.3)
    return figure_png(fig)
