import math

import pytest
import torch

from models.ppo import (
    SAFETY_GATE,
    RunningWhitener,
    entropy_from_logits,
    gae,
    gated_reward,
    kl_penalty,
    logit,
    logprobs_from_logits,
    masked_mean,
    per_token_rewards,
    policy_loss,
    value_loss,
    whiten,
)


def t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(
        actual, torch.as_tensor(expected, dtype=actual.dtype), atol=atol, rtol=0
    )


# --- gated reward and logit ---------------------------------------------------------------


def test_gated_reward_uses_safety_score_in_the_papers_two_cases_only():
    assert SAFETY_GATE == 0.15
    r_help = t(0.9, 0.9, 0.9, 0.9)
    r_safe = t(0.6, 0.1, 0.15, 0.6)
    is_safety = torch.tensor([True, False, False, False])
    # row 0: safety prompt -> R_s 0.6; row 1: R_s 0.1 < 0.15 -> R_s; row 2: R_s == 0.15 is not
    # below the gate -> R_h 0.9; row 3: helpful prompt, safe answer -> R_h 0.9
    close(gated_reward(r_help, r_safe, is_safety), [0.6, 0.1, 0.9, 0.9])


def test_logit_inverts_sigmoid_and_stays_finite_at_0_and_1():
    x = t(-3.0, 0.0, 2.0)
    close(logit(torch.sigmoid(x)), x, atol=1e-4)
    close(logit(t(0.75)), [math.log(3)])  # log(0.75 / 0.25)
    # clamped to 1e-6: log(1e-6 / (1 - 1e-6)) = -13.81551
    ends = logit(t(0.0, 1.0))
    assert torch.isfinite(ends).all() and ends[0] == -ends[1]
    close(ends, [-13.81551, 13.81551], atol=1e-3)


# --- whitening ----------------------------------------------------------------------------


def test_whiten_masked_entries_get_zero_mean_unit_variance_and_the_rest_zero():
    x = t([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([[True, True, True, False]])
    # mean of 1, 2, 3 = 2; population var = (1 + 0 + 1) / 3 = 2/3; 1 / sqrt(2/3) = 1.224745
    out = whiten(x, mask)
    close(out, [[-1.224745, 0.0, 1.224745, 0.0]])  # masked entry (100) -> 0
    close(out[mask].mean(), 0.0)
    close(out[mask].var(unbiased=False), 1.0, atol=1e-4)
    # shift_mean=False adds the mean 2 back on the masked entries
    close(whiten(x, mask, shift_mean=False), [[0.775255, 2.0, 3.224745, 0.0]])


def test_whiten_without_mask_uses_every_entry():
    close(whiten(t(1.0, 3.0)), [-1.0, 1.0])  # mean 2, population std 1


def test_running_whitener_forgets_values_older_than_the_window():
    w = RunningWhitener(window=3)
    w.update(t(1.0, 2.0))
    w.update(t(3.0, 4.0))
    # window keeps 2, 3, 4 (1 is forgotten): mean 3, population std sqrt(2/3) = 0.816497
    assert w.count == 3
    assert w.mean == pytest.approx(3.0)
    assert w.std == pytest.approx(0.816497, abs=1e-6)
    close(w.whiten(t(5.0)), [2.449490])  # (5 - 3) / 0.816497
    close(w.whiten(t(5.0), shift_mean=False), [5.449490])
    w.update(t(10.0))
    # window 3, 4, 10: mean 17/3 = 5.666667; var = (7.111 + 2.778 + 18.778) / 3 = 9.555556
    assert w.mean == pytest.approx(5.666667, abs=1e-6)
    assert w.std == pytest.approx(math.sqrt(9.555556), abs=1e-6)


def test_running_whitener_errors():
    with pytest.raises(ValueError, match="window"):
        RunningWhitener(window=0)
    with pytest.raises(RuntimeError, match="update"):
        RunningWhitener().whiten(t(1.0))


# --- log-probs and KL ---------------------------------------------------------------------


def test_logprobs_from_logits_picks_the_token_in_float32():
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, 0.0]]], dtype=torch.bfloat16)
    lp = logprobs_from_logits(logits, torch.tensor([[1, 0]]))
    # softmax(0, log 3) = (1/4, 3/4) -> log 0.75; softmax(0, 0) -> log 0.5
    assert lp.shape == (1, 2) and lp.dtype == torch.float32
    close(lp, [[math.log(0.75), math.log(0.5)]], atol=1e-2)


def test_kl_estimators_by_hand():
    lp = t(math.log(0.5), math.log(0.2))
    ref = t(math.log(0.25), math.log(0.4))
    # k1 = lp - ref = log 2, log 0.5
    close(kl_penalty(lp, ref, "k1"), [0.693147, -0.693147])
    # k3: ref - lp = log 0.5, log 2 -> (0.5 - 1 + 0.693147, 2 - 1 - 0.693147)
    close(kl_penalty(lp, ref, "k3"), [0.193147, 0.306853])


def test_k3_is_never_negative_and_zero_when_policies_agree():
    g = torch.Generator().manual_seed(0)
    lp, ref = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    assert (kl_penalty(lp, ref, "k3") >= 0).all()
    close(kl_penalty(lp, lp, "k3"), torch.zeros(4, 8))


def test_unknown_kl_estimator_is_a_clear_error():
    with pytest.raises(ValueError, match="'k2'"):
        kl_penalty(t(0.0), t(0.0), "k2")


# --- per-token rewards --------------------------------------------------------------------


def test_score_lands_on_the_last_response_token_of_each_row():
    # row 0: 2 prompt tokens, 3 response tokens; row 1: 1 prompt, 2 response, 2 pad.
    # ref = 0 so k1 KL = lp; the 9s sit on prompt/pad and must be ignored
    mask = torch.tensor([[False, False, True, True, True], [False, True, True, False, False]])
    lp = t([9.0, 9.0, 1.0, 2.0, 3.0], [9.0, 4.0, 5.0, 9.0, 9.0])
    rewards, kl = per_token_rewards(t(10.0, 20.0), lp, torch.zeros_like(lp), mask, beta=0.1)
    close(kl, [[0, 0, 1, 2, 3], [0, 4, 5, 0, 0]])
    # -0.1 * KL on response tokens; last token of row 0: -0.3 + 10; of row 1: -0.5 + 20
    close(rewards, [[0, 0, -0.1, -0.2, 9.7], [0, -0.4, 19.5, 0, 0]])


def test_a_row_without_response_tokens_is_a_clear_error():
    mask = torch.tensor([[True, True], [False, False]])
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        per_token_rewards(t(1.0, 1.0), torch.zeros(2, 2), torch.zeros(2, 2), mask, beta=0.1)


# --- GAE ----------------------------------------------------------------------------------


def test_gae_with_gamma_1_lam_1_is_returns_to_go_minus_values():
    rewards, values = t([1.0, 2.0, 3.0]), t([0.5, 0.5, 0.5])
    adv, ret = gae(rewards, values, torch.ones(1, 3, dtype=torch.bool), gamma=1.0, lam=1.0)
    close(ret, [[6.0, 5.0, 3.0]])  # 1 + 2 + 3, 2 + 3, 3
    close(adv, [[5.5, 4.5, 2.5]])


def test_gae_three_steps_by_hand():
    rewards, values = t([0.0, 0.0, 1.0]), t([0.5, 0.6, 0.7])
    # gamma 0.9, lam 0.95, gamma*lam = 0.855; value after the last token = 0
    # t=2: delta = 1 - 0.7 = 0.3;              A2 = 0.3
    # t=1: delta = 0.9*0.7 - 0.6 = 0.03;       A1 = 0.03 + 0.855*0.3 = 0.2865
    # t=0: delta = 0.9*0.6 - 0.5 = 0.04;       A0 = 0.04 + 0.855*0.2865 = 0.2849575
    adv, ret = gae(rewards, values, torch.ones(1, 3, dtype=torch.bool), gamma=0.9, lam=0.95)
    close(adv, [[0.2849575, 0.2865, 0.3]])
    close(ret, [[0.7849575, 0.8865, 1.0]])  # advantages + values


def test_gae_skips_prompt_and_pad_tokens():
    # the same 3 response tokens as above, between a prompt token and a pad token holding 9s
    rewards, values = t([9.0, 0.0, 0.0, 1.0, 9.0]), t([9.0, 0.5, 0.6, 0.7, 9.0])
    mask = torch.tensor([[False, True, True, True, False]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.95)
    close(adv, [[0.0, 0.2849575, 0.2865, 0.3, 0.0]])
    close(ret, [[0.0, 0.7849575, 0.8865, 1.0, 0.0]])


# --- losses -------------------------------------------------------------------------------


def test_policy_loss_inside_the_clip_range_is_minus_ratio_times_advantage():
    loss, clipfrac, _ = policy_loss(
        t([math.log(1.1)]), t([0.0]), t([2.0]), torch.ones(1, 1, dtype=torch.bool)
    )
    close(loss, -2.2)  # -1.1 * 2
    assert clipfrac.item() == 0.0


def test_policy_loss_by_hand_with_clipping_and_a_masked_token():
    ratios = [1.1, 1.5, 0.5, 0.5, 3.0]
    adv = t([2.0, 1.0, 1.0, -1.0, 100.0])
    mask = torch.tensor([[True, True, True, True, False]])
    lp = torch.log(t(ratios)).requires_grad_()
    loss, clipfrac, approx_kl = policy_loss(lp, torch.zeros(1, 5), adv, mask, clip=0.2)
    # max(-A*r, -A*clip(r)) per token:
    #   r 1.1, A  2: max(-2.2, -2.2) = -2.2   inside
    #   r 1.5, A  1: max(-1.5, -1.2) = -1.2   clipped
    #   r 0.5, A  1: max(-0.5, -0.8) = -0.5   unclipped (pessimistic bound)
    #   r 0.5, A -1: max( 0.5,  0.8) =  0.8   clipped
    #   r 3.0, A 100: masked out
    close(loss, (-2.2 - 1.2 - 0.5 + 0.8) / 4)  # -0.775
    close(clipfrac, 0.5)  # 2 of 4
    # (r - 1) - log r: 0.0046898, 0.0945349, 0.1931472, 0.1931472
    close(approx_kl, 0.4855191 / 4)
    assert not clipfrac.requires_grad and not approx_kl.requires_grad
    loss.backward()
    # clipped and masked tokens pass no gradient; d(-A r)/d lp = -A r / 4 on the others
    close(lp.grad, [[-2.2 / 4, 0.0, -0.5 / 4, 0.0, 0.0]])


def test_value_loss_by_hand():
    values, old = t([1.0, 1.0, 50.0]), t([0.5, 0.9, 0.0])
    returns = t([2.0, 0.0, 0.0])
    mask = torch.tensor([[True, True, False]])
    # token 0: V_clip = 0.5 + 0.2 = 0.7; max((1-2)^2, (0.7-2)^2) = max(1, 1.69) = 1.69
    # token 1: V_clip = 0.9 + 0.1 = 1.0; max(1, 1) = 1; token 2 masked
    close(value_loss(values, old, returns, mask, clip=0.2), 0.5 * (1.69 + 1.0) / 2)  # 0.6725


def test_entropy_of_uniform_is_log_v_and_masked_tokens_are_ignored():
    logits = torch.zeros(2, 3, 5)
    logits[1, 2] = t(100.0, 0.0, 0.0, 0.0, 0.0)  # near one-hot: entropy ~ 0, masked out below
    mask = torch.tensor([[True, True, True], [True, True, False]])
    close(entropy_from_logits(logits, mask), math.log(5))
    close(entropy_from_logits(logits[1:, 2:], torch.ones(1, 1, dtype=torch.bool)), 0.0)


def test_masked_mean():
    x = t([1.0, 2.0], [3.0, float("nan")])
    mask = torch.tensor([[True, True], [True, False]])
    close(masked_mean(x, mask), 2.0)  # (1 + 2 + 3) / 3; the NaN is never read
    close(masked_mean(x, mask, dim=-1), [1.5, 3.0])
    close(masked_mean(x, torch.zeros_like(mask)), 0.0)  # empty mask -> 0, not NaN
