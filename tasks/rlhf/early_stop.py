"""Early stopping and the reward-hacking guard of the PPO trainer (tasks/rlhf/ppo.py).

The paper "use[s] evaluations on held-out prompts for early stopping" (Touvron et al., 2023,
§3.2.3). The policy with the best eval "reward" is kept (a CPU copy of its weights) and restored
at the end; training stops after `patience` evaluations in a row without a strict improvement.

Guard: if eval_fn also returns "guard" (an independent signal, higher is better) and an
evaluation shows the reward above its starting value while the guard has fallen more than
`guard_tolerance` below its starting value, the optimised reward is being gamed; training stops
with reason "guard" and that evaluation is not eligible as the best. Further keys `guard_<name>`
(e.g. the signal per prompt kind) are guards too, each against its own start: one axis can fall
while another rises and their mean stays flat.

Pure torch: no Prefect, no MLflow (metrics go to the MetricLogger the trainer passes in).
"""

from __future__ import annotations

import logging
from typing import Callable, Literal

import torch

from models.llama import Llama
from tasks.tracking import MetricLogger

# a child of the trainer's logger: ppo_step raises "tasks.rlhf.ppo" to INFO, and this inherits it
log = logging.getLogger("tasks.rlhf.ppo.early_stop")

# current policy -> {"reward": higher is better, optional "guard": higher is better, ...}
EvalFn = Callable[[Llama], dict[str, float]]

Stopped = Literal["completed", "early_stop", "guard"]


class EarlyStopping:
    """Evaluations, the best policy so far (CPU copy) and the stop decision (`reason`).

    Without an eval_fn every method is a no-op and `reason` stays None: training runs all its
    iterations and ends with its last weights.
    """

    def __init__(
        self,
        eval_fn: EvalFn | None,
        policy: Llama,
        logger: MetricLogger,
        patience: int,
        guard_tolerance: float,
    ):
        self.eval_fn, self.policy, self.logger = eval_fn, policy, logger
        self.patience, self.guard_tolerance = patience, guard_tolerance
        self.start_reward = self.best_reward = self.last_reward = None
        self.start_guard = self.last_guard = None
        self.start_guards: dict[str, float] = {}
        self.best_iteration = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.since_best = 0
        self.reason: Stopped | None = None

    def evaluate(self, iteration: int) -> None:
        """Run eval_fn on the policy, log ppo_eval/<key>, and update the best and the reason."""
        if self.eval_fn is None:
            return
        self.policy.eval()
        result = {k: float(v) for k, v in self.eval_fn(self.policy).items()}
        if "reward" not in result:
            raise ValueError(f"eval_fn must return 'reward'; got keys {sorted(result)}")
        self.logger.log_metrics({f"ppo_eval/{k}": v for k, v in result.items()}, step=iteration)
        reward, guard = result["reward"], result.get("guard")
        guards = {k: v for k, v in result.items() if k == "guard" or k.startswith("guard_")}
        self.last_reward, self.last_guard = reward, guard
        log.info(
            f"ppo eval it {iteration}: reward {reward:.4f}"
            + (f" guard {guard:.4f}" if guard is not None else "")
        )
        if self.start_reward is None:  # iteration 0: the starting point is the first best
            self.start_reward, self.start_guard, self.start_guards = reward, guard, guards
            self._keep(iteration, reward)
            return
        if self._guard_tripped(reward, guards):
            self.reason = "guard"
            return
        if reward > self.best_reward:
            self._keep(iteration, reward)
        else:
            self.since_best += 1
            if self.since_best >= self.patience:
                self.reason = "early_stop"

    def _guard_tripped(self, reward: float, guards: dict[str, float]) -> bool:
        """The reward rose above its start while some guard fell below its own start by more
        than the tolerance; says which in the log."""
        fallen = {
            k: v
            for k, v in guards.items()
            if k in self.start_guards and v < self.start_guards[k] - self.guard_tolerance
        }
        if not (fallen and reward > self.start_reward):
            return False
        log.warning(
            "ppo guard: eval reward %.4f > start %.4f while %s fell more than %.4f "
            "below the start (%s); stopping",
            reward,
            self.start_reward,
            ", ".join(f"{k} {v:.4f}" for k, v in fallen.items()),
            self.guard_tolerance,
            ", ".join(f"{k} {self.start_guards[k]:.4f}" for k in fallen),
        )
        return True

    def _keep(self, iteration: int, reward: float) -> None:
        self.best_reward, self.best_iteration, self.since_best = reward, iteration, 0
        self.best_state = {
            k: v.detach().to("cpu", copy=True) for k, v in self.policy.state_dict().items()
        }

    def finish(self, last_iteration: int) -> int:
        """The iteration whose weights the policy ends with: with an eval_fn the best one, whose
        weights are loaded back into the policy; without, the last one (nothing changes)."""
        if self.eval_fn is None:
            return last_iteration
        assert self.best_state is not None  # evaluate(0) ran before the first iteration
        self.policy.load_state_dict(self.best_state)
        return self.best_iteration

    def stats(self) -> dict:
        """eval_reward_start/best/end and guard_start/end (None without eval_fn or guard)."""
        return {
            "eval_reward_start": self.start_reward,
            "eval_reward_best": self.best_reward,
            "eval_reward_end": self.last_reward,
            "guard_start": self.start_guard,
            "guard_end": self.last_guard,
        }
