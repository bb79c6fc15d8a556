"""The PPO trainer (Touvron et al., 2023, §3.2.3; RECIPE.md §7). Pure torch: no Prefect, no MLflow.

One iteration:
    1. draw `batch_size` prompts (a shuffled order, cycled; seeded)
    2. sample one response per prompt with the policy (KV-cache `generate`, eval mode, no grad),
       in chunks of `minibatch_size` prompts, each with its own seed
    3. old log-probs and values (PolicyWithValue) and reference log-probs, no grad
    4. r_c = reward_fn(prompt indices, responses)["r_c"] per chunk; score = WHITEN(LOGIT(r_c))
       over the last `whiten_window` scores; per-token rewards = score at the last token -
       beta * KL_t
       (launched on N ranks, chunk k runs steps 2-4 on rank k mod N and the chunks are gathered
       on every rank; tasks/rlhf/ppo_ranks.py)
    5. GAE, advantages whitened over the response tokens
    6. `ppo_epochs` passes over the batch in shuffled minibatches of `minibatch_size`, one AdamW
       step (constant lr) each on policy_loss + vf_coef * value_loss, gradient norm clipped

The math is in models/ppo.py. The value head is created here (zeros) and dropped at the end;
the caller's `policy` is trained in place and stays a plain `Llama`. `torch.set_num_threads`
is set to cfg.threads and left so.

Files: this one is the loop (config, iterations, the update); tasks/rlhf/rollout.py draws the
prompts, samples the responses and scores them (the typed `Rollout`); tasks/rlhf/early_stop.py
holds the evaluations, early stopping and the guard. Log-probs, entropy and the KL are computed
at the sampling temperature (rollout.py).

Metrics (`logger.log_metrics(..., step=iteration)`, iterations count from 1):
    ppo/r_c              mean gated reward r_c of the batch (in [0, 1]; logit clamps to 1e-6)
    ppo/<key>            mean of every other key reward_fn returns (e.g. ppo/r_h, ppo/r_s)
    ppo/score            mean whitened score WHITEN(LOGIT(r_c))
    ppo/kl               mean per-token KL(pi || pi_0) over response tokens (cfg.kl_estimator)
    ppo/kl_seq           mean over sequences of the summed per-token KL
    ppo/entropy          mean per-token entropy of the sampling distribution over responses
    ppo/clipfrac         share of response tokens where the ratio clip was active (minibatch mean)
    ppo/approx_kl        k3 KL(old || new) between rollout and updated policy (minibatch mean)
    ppo/policy_loss, ppo/value_loss   minibatch means
    ppo/grad_norm        mean pre-clip gradient norm of the minibatch steps
    ppo/response_length  mean response tokens (EOS included)
    ppo/cutoff_share     share of responses cut off at max_new_tokens (no EOS)
    ppo/rows             sequences trained on this iteration
    ppo/skipped          prompts drawn but skipped (prompt + max_new_tokens > max_seq_len)
    ppo/rollout_s, ppo/update_s       seconds spent sampling + scoring, and optimising
With eval_fn, at iteration 0 and every eval_every iterations and at the end:
    ppo_eval/reward, ppo_eval/guard (when returned), and any other key as ppo_eval/<key>

With eval_fn the best evaluated policy is kept and restored at the end, and training may stop
early, or on the reward-hacking guard (tasks/rlhf/early_stop.py).
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.llama import Llama
from models.ppo import (
    PolicyWithValue,
    RunningWhitener,
    align_to_tokens,
    gae,
    logit,
    masked_mean,
    per_token_rewards,
    policy_loss,
    sequence_logprobs,
    value_loss,
    whiten,
)
from models.seeding import seeded
from tasks.distributed.launch import LaunchConfig
from tasks.rlhf.early_stop import EarlyStopping, EvalFn, Stopped
from tasks.rlhf.ppo_ranks import PPOEngine, RankGroup
from tasks.rlhf.rollout import (
    ChunkRewardFn,
    PromptCycle,
    Rollout,
    collect_rollout,
    generation_seed,
)
from tasks.tracking import MetricLogger

log = logging.getLogger("tasks.rlhf.ppo")

# (prompt indices of the batch, sampled responses) -> {"r_c": (B,) in [0, 1], others logged}
RewardFn = ChunkRewardFn  # one signature: the trainer hands it to the rollout chunk by chunk

__all__ = ["EvalFn", "PPOConfig", "RewardFn", "Stopped", "train_ppo"]


class PPOConfig(BaseModel):
    """PPO settings; defaults are the paper's (§3.2.3) where it gives them."""

    model_config = ConfigDict(extra="forbid")

    # --- length and batch -------------------------------------------------------------------
    iterations: int = Field(200, gt=0)  # "between 200 and 400 iterations"
    batch_size: int = Field(512, gt=0)  # prompts (= sampled responses) per iteration
    minibatch_size: int = Field(64, gt=0)  # one gradient step per minibatch
    ppo_epochs: int = Field(1, gt=0)  # passes over each batch
    max_new_tokens: int = Field(256, gt=0)  # response length cap (project choice)

    # --- optimizer (§3.2.3: AdamW 0.9/0.95, eps 1e-5, wd 0.1, clip 1.0, constant lr 1e-6) ------
    lr: float = Field(1e-6, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.1, ge=0)  # on weight matrices only (tasks/training/optim.py)
    grad_clip: float = Field(1.0, ge=0)  # 0 = off

    # --- PPO ----------------------------------------------------------------------------------
    kl_beta: float = Field(0.01, ge=0)  # 0.01 for 7B/13B, 0.005 for 34B/70B
    kl_estimator: Literal["k1", "k3"] = "k1"
    clip: float = Field(0.2, gt=0)  # "clip threshold of 0.2"
    value_clip: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    whiten_window: int = Field(1024, gt=0)  # scores the running whitener remembers
    # subtracted from the whitened score of a response cut off at max_new_tokens (project
    # choice, 0 = off): the reward models already score it without EOS, as unfinished
    cutoff_penalty: float = Field(0.0, ge=0)

    # --- sampling -----------------------------------------------------------------------------
    temperature: float = Field(1.0, gt=0)  # > 0: PPO needs samples from the policy, not argmax
    top_p: float = Field(1.0, gt=0, le=1)

    # --- evaluation and early stopping ----------------------------------------------------------
    eval_every: int = Field(10, gt=0)  # iterations between evaluations (with an eval_fn)
    patience: int = Field(3, gt=0)  # evaluations in a row without improvement before stopping
    guard_tolerance: float = Field(0.05, ge=0)  # allowed guard drop below its starting value

    seed: int = 1234
    threads: int = Field(2, gt=0)  # torch intra-op threads

    # --- scale-out (issue 17; tasks/rlhf/ppo_ranks.py) -----------------------------------------
    # the step's processes: in the task's own (`none`) or N ranks under torchrun / deepspeed,
    # rollouts split across them; batch_size and minibatch_size stay global
    launch: LaunchConfig = LaunchConfig()
    engine: Literal["torch", "deepspeed"] = "torch"  # the policy-with-value's optimizer step
    zero_stage: int = Field(0, ge=0, le=2)  # DeepSpeed ZeRO for policy, value head, optimizer

    @model_validator(mode="after")
    def _check(self) -> PPOConfig:
        if self.engine == "torch" and self.zero_stage:
            raise ValueError("zero_stage needs engine='deepspeed'")
        if self.minibatch_size > self.batch_size:
            raise ValueError(
                f"minibatch_size ({self.minibatch_size}) exceeds batch_size "
                f"({self.batch_size}): a minibatch is a slice of one iteration's batch"
            )
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"AdamW betas must lie in [0, 1); got {self.betas}")
        return self


def train_ppo(
    policy: Llama,
    reference: Llama,
    prompts: list[list[int]],
    reward_fn: RewardFn,
    cfg: PPOConfig,
    logger: MetricLogger,
    eval_fn: EvalFn | None = None,
    eos_id: int | None = None,
    pad_id: int = 0,
) -> dict:
    """Train `policy` in place with PPO against `reward_fn`, penalised by the KL to `reference`.

    prompts: token ids of each prompt (no padding). The reference is frozen here (eval mode,
    requires_grad False). With eval_fn the best evaluated policy is restored at the end (module
    docstring). Returns stats: iterations_run, stopped ("completed" | "early_stop" | "guard"),
    best_iteration (the iteration whose weights `policy` ends with), eval_reward_start/best/end,
    guard_start/end (None without eval_fn / guard; *_end is the last evaluation, before the
    restore), skipped_prompts (total), cutoff_share (all iterations), seconds, and
    final_<name> for each ppo/<name> metric of the last iteration.
    """
    _check_inputs(policy, reference, prompts)
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    reference.eval().requires_grad_(False)
    with seeded(cfg.seed):  # the value head is zeroed, but its nn.Linear draws on construction
        model = PolicyWithValue(policy)
    group = RankGroup.join()
    optimizer = PPOEngine(model, cfg, group)
    whitener = RunningWhitener(cfg.whiten_window)
    rng = torch.Generator().manual_seed(cfg.seed)
    sampler = PromptCycle(len(prompts), rng)
    early = EarlyStopping(eval_fn, policy, logger, cfg.patience, cfg.guard_tolerance)
    early.evaluate(0)

    iteration, skipped_total, metrics, cut_off, rows = 0, 0, {}, 0.0, 0.0
    while iteration < cfg.iterations and early.reason is None:
        iteration += 1
        metrics = _iteration(
            iteration,
            model,
            reference,
            prompts,
            sampler.draw(cfg.batch_size),
            reward_fn,
            cfg,
            optimizer,
            whitener,
            rng,
            eos_id,
            pad_id,
            group,
        )
        skipped_total += int(metrics["ppo/skipped"])
        rows += metrics["ppo/rows"]
        cut_off += metrics.get("ppo/cutoff_share", 0.0) * metrics["ppo/rows"]
        logger.log_metrics(metrics, step=iteration)
        log.info(_progress_line(iteration, cfg.iterations, metrics))
        if iteration % cfg.eval_every == 0 or iteration == cfg.iterations:
            early.evaluate(iteration)
    stopped: Stopped = early.reason or "completed"
    best_iteration = early.finish(iteration)
    policy.eval()
    stats = {
        "iterations_run": iteration,
        "stopped": stopped,
        "best_iteration": best_iteration,
        **early.stats(),
        "skipped_prompts": skipped_total,
        "cutoff_share": cut_off / rows if rows else 0.0,  # over every iteration's responses
        "seconds": time.perf_counter() - started,
    }
    stats.update({f"final_{k.removeprefix('ppo/')}": v for k, v in metrics.items()})
    log.info(
        "ppo stopped (%s) after %d iterations; keeping iteration %d; %.1f s",
        stopped,
        iteration,
        best_iteration,
        stats["seconds"],
    )
    return stats


# --- one iteration -------------------------------------------------------------------------


def _iteration(
    iteration: int,
    model: PolicyWithValue,
    reference: Llama,
    prompts: list[list[int]],
    drawn: list[int],
    reward_fn: RewardFn,
    cfg: PPOConfig,
    optimizer: PPOEngine,
    whitener: RunningWhitener,
    rng: torch.Generator,
    eos_id: int | None,
    pad_id: int,
    group: RankGroup,
) -> dict[str, float]:
    t0 = time.perf_counter()
    # 1. prompts with room for a whole response; the others are skipped and counted
    room = model.policy.config.max_seq_len - cfg.max_new_tokens
    indices = [i for i in drawn if len(prompts[i]) <= room]
    skipped = {"ppo/skipped": float(len(drawn) - len(indices))}
    if not indices:
        log.warning(
            "ppo iteration %d: all %d drawn prompts are too long; no update", iteration, len(drawn)
        )
        return skipped | {"ppo/rows": 0.0}
    # 2-4. sample with the policy; old log-probs, values and reference log-probs, no grad; the
    # reward models' r_c (chunks across ranks, gathered in order on every rank)
    rollout = collect_rollout(
        model,
        reference,
        prompts,
        indices,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        eos_id=eos_id,
        pad_id=pad_id,
        seed=generation_seed(cfg.seed, iteration),
        chunk_rows=cfg.minibatch_size,
        reward_fn=reward_fn,
        group=group,
    )
    # r_c -> whitened score -> per-token rewards; 5. GAE
    rewards_out = rollout.rewards
    r_c = _check_r_c(rewards_out, len(rollout.indices)).to(rollout.tokens.device)
    score, kl, advantages, returns = _advantages(rollout, r_c, whitener, cfg)
    t1 = time.perf_counter()
    # 6. the PPO epochs
    update = _update(model, optimizer, rollout, advantages, returns, cfg, rng, group)
    t2 = time.perf_counter()

    mask = rollout.response_mask
    rewards_logged = {
        f"ppo/{k}": float(torch.as_tensor(v, dtype=torch.float32).mean())
        for k, v in rewards_out.items()
        if k != "r_c"
    }
    return skipped | {
        "ppo/r_c": float(r_c.mean()),
        **rewards_logged,
        "ppo/score": float(score.mean()),
        "ppo/kl": float(masked_mean(kl, mask)),
        "ppo/kl_seq": float(kl.sum(dim=1).mean()),
        "ppo/entropy": rollout.entropy,
        **update,
        "ppo/response_length": float(mask.sum(dim=1).float().mean()),
        "ppo/cutoff_share": sum(not e for e in rollout.ended) / len(rollout.ended),
        "ppo/rows": float(mask.shape[0]),
        "ppo/rollout_s": t1 - t0,
        "ppo/update_s": t2 - t1,
    }


def _advantages(
    rollout: Rollout, r_c: torch.Tensor, whitener: RunningWhitener, cfg: PPOConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """score (B,) = WHITEN(LOGIT(r_c)) over the whitener's window (this batch included); the
    per-token KL (B, T); whitened GAE advantages (B, T) and returns (B, T)."""
    x = logit(r_c)  # (B,)
    whitener.update(x)
    score = whitener.whiten(x)  # (B,)
    if cfg.cutoff_penalty:
        cut = torch.tensor([not e for e in rollout.ended], device=score.device)
        score = score - cfg.cutoff_penalty * cut.float()
    mask = rollout.response_mask
    rewards, kl = per_token_rewards(
        score, rollout.logprobs, rollout.ref_logprobs, mask, cfg.kl_beta, cfg.kl_estimator
    )  # (B, T)
    advantages, returns = gae(rewards, rollout.values, mask, cfg.gamma, cfg.lam)
    return score, kl, whiten(advantages, mask), returns


def _update(
    model: PolicyWithValue,
    engine: PPOEngine,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cfg: PPOConfig,
    rng: torch.Generator,
    group: RankGroup,
) -> dict[str, float]:
    """ppo_epochs passes of shuffled minibatches, one optimizer step each; mean stats.

    Each minibatch's rows are split across ranks; a rank's loss is its share of the minibatch's
    token mean (its response tokens / the minibatch's), so the summed gradient is the one-rank
    gradient (tasks/rlhf/ppo_ranks.py). A rank with no row of a small minibatch steps with a
    zero-weighted row, as the collective step needs every rank."""
    model.train()
    tokens, mask = rollout.tokens, rollout.response_mask
    sums = {"policy_loss": 0.0, "value_loss": 0.0, "clipfrac": 0.0, "approx_kl": 0.0}
    grad_norms, steps = 0.0, 0
    lengths = mask.shape[1] - mask.flip(1).int().argmax(dim=1)  # (B,) end of each row's response
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(tokens.shape[0], generator=rng)
        for rows in order.split(cfg.minibatch_size):
            mine = rows[group.rank :: group.world]
            share = float(mask[mine].sum()) / float(mask[rows].sum())
            if not len(mine):
                mine, share = rows[:1], 0.0
            T = int(lengths[mine].max())  # drop columns that are pad in every row
            tok, m = tokens[mine, :T], mask[mine, :T]
            logits, v = engine.forward(tok)
            lp = sequence_logprobs(logits / cfg.temperature, tok, m)
            values = torch.where(m, align_to_tokens(v), 0.0)
            pg, clipfrac, approx_kl = policy_loss(
                lp, rollout.logprobs[mine, :T], advantages[mine, :T], m, cfg.clip
            )
            vl = value_loss(values, rollout.values[mine, :T], returns[mine, :T], m, cfg.value_clip)
            grad_norms += engine.step((pg + cfg.vf_coef * vl) * share)
            for key, value in (
                ("policy_loss", pg),
                ("value_loss", vl),
                ("clipfrac", clipfrac),
                ("approx_kl", approx_kl),
            ):
                sums[key] += float(value.detach()) * share
            steps += 1
    model.eval()
    out = {f"ppo/{k}": v / steps for k, v in group.sum(sums).items()}
    return out | {"ppo/grad_norm": grad_norms / steps}  # the global norm: the same on every rank


# --- checks and the progress line ------------------------------------------------------------


def _check_inputs(policy: Llama, reference: Llama, prompts: list[list[int]]) -> None:
    if policy is reference:
        raise ValueError(
            "policy and reference must be different models (the reference is "
            "frozen; pass a copy of the initial policy)"
        )
    if policy.config.vocab_size != reference.config.vocab_size:
        raise ValueError(
            f"policy vocabulary {policy.config.vocab_size} != reference "
            f"vocabulary {reference.config.vocab_size}"
        )
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("train_ppo needs at least one prompt, and no prompt may be empty")


def _check_r_c(out: dict[str, torch.Tensor], B: int) -> torch.Tensor:
    if "r_c" not in out:
        raise ValueError(f"reward_fn must return 'r_c'; got keys {sorted(out)}")
    r_c = torch.as_tensor(out["r_c"]).detach().float().flatten()
    if r_c.shape != (B,):
        raise ValueError(f"reward_fn's r_c has {r_c.numel()} values for {B} responses")
    # [0, 1], not (0, 1): a float32 sigmoid rounds to exactly 1 from ~17; logit() clamps
    if not bool(((r_c >= 0) & (r_c <= 1)).all()):
        raise ValueError(
            f"r_c must lie in [0, 1] (sigmoid rewards); got {r_c.min():.4g}..{r_c.max():.4g}"
        )
    return r_c


def _progress_line(iteration: int, total: int, m: dict[str, float]) -> str:
    if not m.get("ppo/rows"):
        return f"ppo it {iteration}/{total}: no rows"
    return (
        f"ppo it {iteration}/{total}: r_c {m['ppo/r_c']:.3f} kl {m['ppo/kl']:.4f} "
        f"ent {m['ppo/entropy']:.3f} pg {m['ppo/policy_loss']:.4f} "
        f"vf {m['ppo/value_loss']:.4f} clip {m['ppo/clipfrac']:.3f} "
        f"len {m['ppo/response_length']:.1f} ({m['ppo/rollout_s']:.2f}+"
        f"{m['ppo/update_s']:.2f} s)"
    )
