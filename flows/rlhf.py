"""RLHF stage (RECIPE.md §7): rounds RLHF-V1..Vn, each a nested MLflow run under the stage's.

Round 1 starts from the SFT model and optimises against the reward stage's RMs (trained on the
batches collected from the SFT-era models). Round r >= 2 first collects a fresh batch from the
newest policy with the rule annotator, appends it to every earlier batch and retrains both RMs
(`refresh_reward_models`). Each round then improves the policy with rejection sampling (K
samples, best by the gated reward, fine-tuned on), and from round `ppo_from` on with PPO on top
of the rejection-sampling model. Each round's policy is a registered model version. After the
rounds, every version answers the held-out prompts and one table compares them.
"""

from __future__ import annotations

import polars as pl
from prefect import flow
from prefect.runtime import flow_run

from flows._runner import StageRunner
from flows.dag import expand_reruns
from flows.people import collect_with_people
from flows.results import RewardResult, RlhfResult, RlhfRound
from tasks.config import flatten, load_config
from tasks.io import read_dataset
from tasks.register import register_step
from tasks.rlhf import dpo_steps, ppo_steps, round_table, rounds, steps
from tasks.rlhf.average import average_step
from tasks.tracking import log_step, stage_run
from tasks.versions import AVERAGED_VERSION

DESCRIPTION = (
    "Iterative RLHF: per round, fresh preferences from the newest policy (rule annotator, a "
    "stand-in for people) and refreshed Helpfulness/Safety RMs; rejection sampling (K samples, "
    "best by the safety-gated reward R_c); PPO from round ppo_from on; one registered model "
    "version per round; a per-round table on held-out prompts."
)

# the shared registration task, named per round
register_round = register_step.with_options(name="register_round")


def _round_description(r: int, ppo: bool, refresh: bool, method: str = "ppo") -> str:
    parts = (
        ["refresh both RMs on a fresh batch from the newest policy"]
        if refresh
        else ["the reward stage's RMs"]
    )
    parts.append("rejection sampling")
    if ppo:
        parts.append(f"{method.upper()} on top of the rejection-sampling model")
    return f"RLHF-V{r}: " + ", then ".join(parts) + "."


@flow(name="rlhf")
def rlhf_flow(
    preset: str = "demo",
    overrides: list[str] | None = None,
    rerun: list[str] | None = None,
    parent_run_id: str | None = None,
    reward: RewardResult | None = None,
) -> RlhfResult:
    """Run the RLHF rounds. Without `reward` (the reward stage's result), the earlier stages
    supply it (cached when nothing changed)."""
    cfg = load_config(preset, overrides or [])
    if reward is None:
        from flows.reward import reward_flow

        reward = reward_flow(preset, overrides, rerun, parent_run_id)
    l, seed, run_dir, data_dir = cfg.rlhf, cfg.seed, str(cfg.run_dir), str(cfg.data_dir)
    dialogues, tokenizer, sft_dir = (
        reward.sft.dialogues,
        reward.tokenizer_model,
        reward.sft.model_dir,
    )
    prompts = rounds.prompt_sets(read_dataset(dialogues).to_dicts(), l, seed)
    run = StageRunner("rlhf", expand_reruns(rerun or []))
    with stage_run(cfg, "rlhf", parent_run_id, flow_run.id, DESCRIPTION) as tracker:
        tracker.log_params(
            {
                **flatten(l, "rlhf."),
                "seed": seed,
                **{f"prompts.{k}": len(v) for k, v in prompts.items()},
            }
        )
        pairs = reward.pairs
        rm_seq_len = cfg.reward.seq_len("helpfulness")  # what R_h, R_s and R_c are scored at
        rms = dict(reward.reward_models)
        policy = previous = sft_dir
        versions, samples, summary = {"sft": sft_dir}, [], []
        for r in range(1, l.rounds + 1):
            label, ppo = f"v{r}", r >= l.ppo_from
            with stage_run(
                cfg,
                f"rlhf-v{r}",
                tracker.run_id,
                flow_run.id,
                _round_description(r, ppo, r >= 2, l.method),
            ) as rt:
                rt.set_tags(
                    {
                        "rlhf.round": str(r),
                        "rlhf.ppo": str(ppo and l.method == "ppo"),
                        "rlhf.policy_step": l.method if ppo else "none",
                    }
                )
                if r >= 2:
                    round_models = {"latest": policy, "previous": previous, "sft": sft_dir}
                    people = None
                    if l.collection.annotator != "rule":  # people label the refresh batch
                        queued, people = collect_with_people(
                            run,
                            f"rlhf-v{r}",
                            dialogues,
                            round_models,
                            tokenizer,
                            cfg.reward,
                            l.collection,
                            cfg.corpus.toxicity,
                            seed,
                            steps.next_batch(pairs),
                            run_dir,
                            data_dir,
                            None,
                            label=label,
                        )
                        rt.log_metrics(queued.stats)
                        log_step(rt, people)
                    refreshed = run(
                        steps.refresh_step,
                        r,
                        round_models,
                        pairs,
                        dialogues,
                        tokenizer,
                        sft_dir,
                        cfg.reward,
                        l.collection,
                        cfg.corpus.toxicity,
                        seed,
                        data_dir,
                        run_dir,
                        rt.run_id,
                        people[steps.PAIRS] if people else None,
                        people[steps.PAIRS_EXCLUDED] if people else None,
                        label=label,
                    )
                    log_step(rt, refreshed, datasets={steps.PAIRS: "training"})
                    pairs, rms = refreshed.outputs[steps.PAIRS], dict(refreshed.models)
                sampled = run(
                    steps.rejection_sample_step,
                    r,
                    policy,
                    rms,
                    prompts["rs"],
                    list(samples),
                    tokenizer,
                    rm_seq_len,
                    cfg.reward.annotator,
                    l.rejection,
                    l.rs_pool_from,
                    seed,
                    data_dir,
                    run_dir,
                    cfg.corpus.toxicity,
                    label=label,
                )
                log_step(
                    rt,
                    sampled,
                    datasets={steps.SAMPLES: "training"},
                    artifact_path="rejection_sampling",
                )
                samples.append(sampled.outputs[steps.SAMPLES])
                tuned = run(
                    steps.rs_finetune_step,
                    r,
                    policy,
                    sampled.outputs[steps.SAMPLES],
                    tokenizer,
                    l.rejection.finetune,
                    cfg.sft.format,
                    run_dir,
                    rt.run_id,
                    label=label,
                )
                log_step(rt, tuned)
                new_policy, how = tuned.models["model"], "rejection sampling"
                if ppo and l.method == "dpo":  # DPO on the round's pairs instead of PPO
                    trained = run(
                        dpo_steps.dpo_step,
                        r,
                        new_policy,
                        pairs,
                        tokenizer,
                        l.dpo,
                        seed,
                        run_dir,
                        rt.run_id,
                        label=label,
                    )
                    rt.log_metrics(trained.stats)
                    new_policy = trained.models["model"]
                    how = f"rejection sampling, then DPO ({trained.notes['stopped']})"
                elif ppo:
                    trained = run(
                        ppo_steps.ppo_step,
                        r,
                        new_policy,
                        rms,
                        prompts["ppo"],
                        prompts["validation"],
                        tokenizer,
                        rm_seq_len,
                        cfg.reward.annotator,
                        l.ppo,
                        cfg.corpus.toxicity,
                        seed,
                        run_dir,
                        rt.run_id,
                        label=label,
                    )
                    rt.log_metrics(trained.stats)
                    new_policy = trained.models["model"]
                    how = f"rejection sampling, then PPO ({trained.notes['stopped']})"
                registered = run(
                    register_round,
                    new_policy,
                    tokenizer,
                    l.registered_model,
                    f"RLHF-V{r}: {how}",
                    run_dir,
                    rt.run_id,
                    label=label,
                )
                rt.log_metrics(registered.stats)
                previous, policy = policy, new_policy
                versions[f"rlhf-v{r}"] = policy
                summary.append(RlhfRound(round=r, how=how, model_dir=policy))
        if l.averaged_rounds > 1:  # the final policy: the mean of the last rounds' weights
            labels = list(versions)[-l.averaged_rounds :]
            averaged = run(
                average_step, [versions[v] for v in labels], labels, run_dir, label="avg"
            )
            log_step(tracker, averaged)
            policy = averaged.models["model"]
            registered = run(
                register_round,
                policy,
                tokenizer,
                l.registered_model,
                "RLHF: the uniform mean of the weights of " + ", ".join(labels),
                run_dir,
                tracker.run_id,
                label="avg",
            )
            tracker.log_metrics({f"avg.{k}": v for k, v in registered.stats.items()})
            versions[AVERAGED_VERSION] = policy
        evaluated = run(
            round_table.evaluate_step,
            versions,
            rms,
            prompts["eval"],
            tokenizer,
            rm_seq_len,
            cfg.reward.annotator,
            l.evaluation,
            cfg.corpus.toxicity,
            seed,
            data_dir,
            run_dir,
        )
        log_step(
            tracker,
            evaluated,
            datasets={round_table.EVAL: "evaluation"},
            artifact_path="evaluation",
        )
        tracker.log_table(pl.read_csv(evaluated.files["rounds.csv"]), "rlhf_rounds")
        tracker.set_tags({f"task.{k}": v for k, v in run.states.items()})
    return RlhfResult(
        models=versions,
        model_dir=policy,
        rounds=summary,
        reward_models=rms,
        tokenizer_model=tokenizer,
        reward=reward,
        outputs={"preference_pairs": pairs, "rlhf_eval": evaluated.outputs[round_table.EVAL]},
        rejection_samples=samples,
        states=run.states,
        mlflow_run_id=tracker.run_id,
        flow_run_id=str(flow_run.id),
    )
