import copy
import dataclasses
import math

import pytest
import torch

from models.llama import Llama, tiny
from models.ppo import PolicyWithValue, sequence_logprobs
from tasks.rlhf.ppo import PPOConfig, train_ppo
from tasks.tracking import InMemoryLogger
from tests.unit.models.test_llama import trunk_by_hand

torch.set_num_threads(1)

VOCAB = 32
TARGET = 7  # the token the known reward pays for


def make_model(seed: int = 0, max_seq_len: int = 16) -> Llama:
    torch.manual_seed(seed)
    return Llama(dataclasses.replace(tiny(vocab_size=VOCAB), max_seq_len=max_seq_len))


def make_prompts(n: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(
            1, VOCAB, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g
        ).tolist()
        for _ in range(n)
    ]


def target_share(indices: list[int], responses: list[list[int]]) -> dict[str, torch.Tensor]:
    """r_c = share of response tokens equal to TARGET, kept inside (0, 1) for the logit."""
    share = torch.tensor([sum(t == TARGET for t in r) / len(r) for r in responses])
    return {"r_c": share.clamp(0.02, 0.98), "r_h": share}


def small_cfg(**overrides) -> PPOConfig:
    # lr 1e-3, not the paper's 1e-6: that is for 7B-70B models a few hundred steps from a good
    # SFT policy; a 100k-parameter model from random init needs far larger steps to move at all
    base = dict(
        iterations=10, batch_size=4, minibatch_size=4, max_new_tokens=4, lr=1e-3, threads=1, seed=0
    )
    return PPOConfig(**(base | overrides))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def values_of(logger: InMemoryLogger, key: str) -> list[float]:
    return [v for _, v in logger.metrics[key]]


# --- PolicyWithValue and alignment ------------------------------------------------------------


def test_policy_with_value_shares_the_trunk_pass_and_starts_with_zero_values():
    policy = make_model()
    model = PolicyWithValue(policy)
    tokens = torch.randint(0, VOCAB, (3, 9))
    logits, values = model(tokens)
    expected, _ = policy(tokens)
    assert logits.dtype == torch.float32 and torch.equal(logits, expected)  # bit for bit
    assert values.shape == (3, 9) and values.dtype == torch.float32
    assert torch.equal(values, torch.zeros(3, 9))
    assert not model.value_head.weight.any() and not model.value_head.bias.any()
    assert model.policy is policy
    # the head's parameters are the only ones PolicyWithValue adds
    assert {n for n, _ in model.named_parameters() if not n.startswith("policy.")} == {
        "value_head.weight",
        "value_head.bias",
    }


def test_policy_with_value_values_are_the_head_on_the_old_hand_written_trunk_loop():
    model = PolicyWithValue(make_model(seed=2))
    torch.nn.init.normal_(model.value_head.weight)
    tokens = torch.randint(0, VOCAB, (2, 7))
    h = trunk_by_hand(model.policy, tokens)
    logits, values = model(tokens)
    assert torch.equal(values, model.value_head(h).squeeze(-1).float())
    assert torch.equal(logits, model.policy.output(h).float())


def test_policy_with_value_values_are_causal_so_right_padding_is_harmless():
    model = PolicyWithValue(make_model())
    torch.nn.init.normal_(model.value_head.weight)  # non-zero values to compare
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[3, 4, 5, 0, 0]])
    logits_s, values_s = model(short)
    logits_p, values_p = model(padded)
    assert values_s.abs().min() > 0
    torch.testing.assert_close(values_p[:, :3], values_s)
    torch.testing.assert_close(logits_p[:, :3], logits_s)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_sequence_logprobs_reads_token_t_from_the_logits_at_t_minus_1():
    # V = 2; logits at column 0 say p(1) = 3/4, at column 1 p(0) = 1/2, column 2 is never read
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, 0.0], [5.0, -5.0]]])
    tokens = torch.tensor([[0, 1, 0]])
    out = sequence_logprobs(logits, tokens)
    # column 0: no prediction -> 0; column 1: log p(1 | col 0) = log 0.75; column 2: log 0.5
    torch.testing.assert_close(out, torch.tensor([[0.0, math.log(0.75), math.log(0.5)]]))
    mask = torch.tensor([[False, False, True]])
    torch.testing.assert_close(
        sequence_logprobs(logits, tokens, mask), torch.tensor([[0.0, 0.0, math.log(0.5)]])
    )


# --- PPO on a known reward --------------------------------------------------------------------


@pytest.fixture(scope="module")
def known_reward_run():
    policy = make_model()
    reference = copy.deepcopy(policy)
    before_policy, before_reference = snapshot(policy), snapshot(reference)
    logger = InMemoryLogger()
    # 24 iterations x 2 epochs x 2 minibatches = 96 AdamW steps; ~2.5 s on one thread
    cfg = PPOConfig(
        iterations=24,
        batch_size=16,
        minibatch_size=8,
        ppo_epochs=2,
        lr=1e-3,
        max_new_tokens=8,
        threads=1,
        seed=2,  # measured, seeds 0-3: last-4 mean r_c 0.56, 0.94, 0.95, 0.91 (seed 0 is slow)
    )
    stats = train_ppo(policy, reference, make_prompts(16), target_share, cfg, logger)
    return policy, reference, before_policy, before_reference, logger, stats


def test_ppo_raises_a_known_reward_and_moves_away_from_the_reference(known_reward_run):
    _, _, _, _, logger, stats = known_reward_run
    r_c = values_of(logger, "ppo/r_c")
    assert len(r_c) == 24 and [s for s, _ in logger.metrics["ppo/r_c"]] == list(range(1, 25))
    first, last = sum(r_c[:4]) / 4, sum(r_c[-4:]) / 4
    # measured: first ~0.06 (1/32 by chance), last ~0.9
    assert last > first + 0.5, (first, last)
    kl = values_of(logger, "ppo/kl")
    assert all(math.isfinite(k) for k in kl) and kl[-1] > 0.1 and kl[-1] > kl[0]
    assert values_of(logger, "ppo/kl_seq")[-1] > kl[-1]  # summed over 8 tokens
    assert values_of(logger, "ppo/response_length") == [8.0] * 24  # no EOS: always 8 tokens
    assert values_of(logger, "ppo/cutoff_share") == [1.0] * 24  # ... so every one is cut off
    assert stats["cutoff_share"] == 1.0 and stats["final_cutoff_share"] == 1.0
    # the other reward_fn keys are logged as means; the policy collapses on TARGET
    assert values_of(logger, "ppo/r_h")[-1] == pytest.approx(r_c[-1], abs=0.02)
    assert values_of(logger, "ppo/entropy")[-1] < values_of(logger, "ppo/entropy")[0]
    for key in (
        "ppo/score",
        "ppo/clipfrac",
        "ppo/approx_kl",
        "ppo/policy_loss",
        "ppo/value_loss",
        "ppo/skipped",
    ):
        assert len(values_of(logger, key)) == 24 and all(map(math.isfinite, values_of(logger, key)))
    assert stats["stopped"] == "completed" and stats["iterations_run"] == 24
    assert stats["best_iteration"] == 24 and stats["eval_reward_start"] is None
    assert stats["final_r_c"] == r_c[-1] and stats["skipped_prompts"] == 0


def test_ppo_trains_the_policy_and_leaves_the_reference_alone(known_reward_run):
    policy, reference, before_policy, before_reference, _, _ = known_reward_run
    assert same_weights(snapshot(reference), before_reference)
    assert not any(p.requires_grad for p in reference.parameters()) and not reference.training
    changed = [k for k, v in snapshot(policy).items() if not torch.equal(v, before_policy[k])]
    assert "output.weight" in changed and "layers.0.attention.wq.weight" in changed
    assert type(policy) is Llama and not policy.training


def test_prompts_without_room_for_the_response_are_skipped_and_counted():
    prompts = make_prompts(3) + [list(range(1, 14))]  # 13 + 4 new tokens > max_seq_len 16
    seen: list[int] = []

    def reward_fn(indices, responses):
        seen.extend(indices)
        return target_share(indices, responses)

    logger = InMemoryLogger()
    stats = train_ppo(
        make_model(), make_model(), prompts, reward_fn, small_cfg(iterations=2), logger
    )
    # batch 4 over 4 prompts: each iteration draws every prompt once, the long one is skipped
    assert sorted(seen) == [0, 0, 1, 1, 2, 2]
    assert values_of(logger, "ppo/skipped") == [1.0, 1.0] and stats["skipped_prompts"] == 2
    assert values_of(logger, "ppo/rows") == [3.0, 3.0]
    with pytest.raises(ValueError, match="different models"):
        model = make_model()
        train_ppo(model, model, prompts, reward_fn, small_cfg(), InMemoryLogger())


def test_reward_fn_must_return_r_c_inside_0_1():
    def bad(indices, responses):
        return {"r_c": torch.full((len(responses),), 1.5)}

    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_ppo(
            make_model(),
            make_model(),
            make_prompts(4),
            bad,
            small_cfg(iterations=1),
            InMemoryLogger(),
        )
    with pytest.raises(ValueError, match="'r_c'"):
        train_ppo(
            make_model(),
            make_model(),
            make_prompts(4),
            lambda i, r: {"r_h": 0.5},
            small_cfg(iterations=1),
            InMemoryLogger(),
        )


# --- early stopping and the guard -------------------------------------------------------------


class RecordingEval:
    """eval_fn returning scripted rewards/guards, keeping the weights it was shown."""

    def __init__(self, rewards: list[float], guards: list[float] | None = None):
        self.rewards, self.guards = rewards, guards
        self.seen: list[dict[str, torch.Tensor]] = []

    def __call__(self, policy: Llama) -> dict[str, float]:
        i = len(self.seen)
        self.seen.append(snapshot(policy))
        out = {"reward": self.rewards[i]}
        if self.guards is not None:
            out["guard"] = self.guards[i]
        return out


def test_early_stop_after_patience_evals_without_improvement_restores_the_best():
    policy, logger = make_model(), InMemoryLogger()
    initial = snapshot(policy)
    evals = RecordingEval([1.0] + [0.5] * 20)  # never better than the start
    cfg = small_cfg(iterations=10, eval_every=1, patience=2)
    stats = train_ppo(policy, make_model(), make_prompts(4), target_share, cfg, logger, evals)
    assert stats["stopped"] == "early_stop"
    assert stats["iterations_run"] == 2 and len(evals.seen) == 3  # evals at 0, 1, 2
    assert stats["best_iteration"] == 0
    assert (stats["eval_reward_start"], stats["eval_reward_best"], stats["eval_reward_end"]) == (
        1.0,
        1.0,
        0.5,
    )
    assert not same_weights(evals.seen[-1], initial)  # training did move the weights ...
    assert same_weights(snapshot(policy), initial)  # ... and the best (initial) ones are back
    assert logger.metrics["ppo_eval/reward"] == [(0, 1.0), (1, 0.5), (2, 0.5)]


def test_improving_evals_keep_training_and_keep_the_last_best():
    policy, logger = make_model(), InMemoryLogger()
    evals = RecordingEval([0.1, 0.2, 0.15, 0.3, 0.25])  # evals at 0, 2, 4, 6 and the end (7)
    cfg = small_cfg(iterations=7, eval_every=2, patience=2)
    stats = train_ppo(policy, make_model(), make_prompts(4), target_share, cfg, logger, evals)
    assert stats["stopped"] == "completed" and stats["iterations_run"] == 7
    assert [s for s, _ in logger.metrics["ppo_eval/reward"]] == [0, 2, 4, 6, 7]
    assert stats["best_iteration"] == 6 and stats["eval_reward_best"] == 0.3
    assert same_weights(snapshot(policy), evals.seen[3])
    assert not same_weights(snapshot(policy), evals.seen[4])


def test_guard_stops_when_the_reward_rises_while_the_guard_falls():
    policy, logger = make_model(), InMemoryLogger()
    # eval 1: reward up, guard down by 0.05 <= tolerance 0.1 -> fine, new best
    # eval 2: reward up again, guard 0.3 < 0.5 - 0.1 -> reward hacking: stop
    evals = RecordingEval(
        [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5], guards=[0.5, 0.45] + [0.3] * 9
    )  # enough for 10 iterations
    cfg = small_cfg(iterations=10, eval_every=1, patience=5, guard_tolerance=0.1)
    stats = train_ppo(policy, make_model(), make_prompts(4), target_share, cfg, logger, evals)
    assert stats["stopped"] == "guard" and stats["iterations_run"] == 2
    assert (stats["guard_start"], stats["guard_end"]) == (0.5, 0.3)
    # the flagged evaluation (reward 0.7) is not kept: the policy of iteration 1 is
    assert stats["best_iteration"] == 1 and stats["eval_reward_best"] == 0.6
    assert same_weights(snapshot(policy), evals.seen[1])
    assert logger.metrics["ppo_eval/guard"] == [(0, 0.5), (1, 0.45), (2, 0.3)]


def test_a_guard_per_axis_stops_when_one_axis_falls_while_the_mean_holds():
    class PerAxis(RecordingEval):
        def __call__(self, policy):
            out = super().__call__(policy)
            i = len(self.seen) - 1
            return out | {
                "guard_helpfulness": [0.8, 0.6][min(i, 1)],
                "guard_safety": [0.4, 0.6][min(i, 1)],
            }

    evals = PerAxis([0.5, 0.6, 0.7], guards=[0.6, 0.6, 0.6])  # the mean guard stays flat
    cfg = small_cfg(iterations=10, eval_every=1, patience=5, guard_tolerance=0.1)
    stats = train_ppo(
        make_model(), make_model(), make_prompts(4), target_share, cfg, InMemoryLogger(), evals
    )
    assert (
        stats["stopped"] == "guard"
        and stats["iterations_run"] == 1
        and stats["best_iteration"] == 0
    )


def test_a_falling_guard_without_a_rising_reward_is_not_a_guard_stop():
    evals = RecordingEval([0.5, 0.4, 0.4], guards=[0.5, 0.1, 0.1])
    cfg = small_cfg(iterations=10, eval_every=1, patience=2, guard_tolerance=0.1)
    stats = train_ppo(
        make_model(), make_model(), make_prompts(4), target_share, cfg, InMemoryLogger(), evals
    )
    assert stats["stopped"] == "early_stop" and stats["iterations_run"] == 2


# --- config -----------------------------------------------------------------------------------


def test_config_defaults_are_the_papers():
    cfg = PPOConfig()
    assert (cfg.batch_size, cfg.minibatch_size, cfg.ppo_epochs) == (512, 64, 1)
    assert (cfg.lr, cfg.betas, cfg.eps, cfg.weight_decay, cfg.grad_clip) == (
        1e-6,
        (0.9, 0.95),
        1e-5,
        0.1,
        1.0,
    )
    assert (cfg.kl_beta, cfg.clip) == (0.01, 0.2)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"batch_size": 8, "minibatch_size": 16}, "minibatch_size"),
        ({"clip": 0.0}, "clip"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"gamma": 1.1}, "gamma"),
        ({"kl_estimator": "k2"}, "kl_estimator"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"patience": 0}, "patience"),
        ({"iterations": 0}, "iterations"),
        ({"whiten_window": 0}, "whiten_window"),
        ({"learning_rate": 1e-5}, "learning_rate"),  # extra="forbid": a typo is an error
    ],
)
def test_config_rejects_bad_values_with_a_named_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(**overrides)
