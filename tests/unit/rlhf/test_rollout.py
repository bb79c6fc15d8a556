"""The typed rollout: one sampled batch and its no-grad scoring, fields as documented."""

import copy

import torch

from models.ppo import PolicyWithValue, RunningWhitener
from tasks.rlhf.ppo import PPOConfig, _advantages
from tasks.rlhf.rollout import PromptCycle, Rollout, collect_rollout, pack
from tests.unit.rlhf.test_ppo_trainer import VOCAB, make_model, make_prompts

torch.set_num_threads(1)


def test_pack_right_pads_and_masks_only_the_response():
    tokens, mask = pack([[5, 6], [7]], [[8], [9, 10, 11]], pad_id=0)
    assert tokens.tolist() == [[5, 6, 8, 0], [7, 9, 10, 11]]
    assert mask.tolist() == [[False, False, True, False], [False, True, True, True]]


def test_prompt_cycle_draws_every_prompt_once_before_repeating():
    cycle = PromptCycle(5, torch.Generator().manual_seed(0))
    first, second = cycle.draw(5), cycle.draw(3) + cycle.draw(2)
    assert sorted(first) == sorted(second) == [0, 1, 2, 3, 4]


def test_collect_rollout_fields_have_the_documented_shapes_and_alignment():
    policy = make_model(seed=1)
    model, reference = PolicyWithValue(policy), copy.deepcopy(policy)
    torch.nn.init.normal_(model.value_head.weight)  # non-zero values, to see where they land
    prompts = make_prompts(6)
    rollout = collect_rollout(
        model,
        reference,
        prompts,
        [4, 0, 2],
        max_new_tokens=4,
        temperature=0.7,
        top_p=1.0,
        eos_id=None,
        pad_id=0,
        seed=3,
        chunk_rows=2,
    )  # two chunks: rows 0-1, then row 2
    assert isinstance(rollout, Rollout) and rollout.indices == [4, 0, 2]
    B, T = rollout.tokens.shape
    assert B == 3 and T == max(len(prompts[i]) for i in (4, 0, 2)) + 4
    for row, (i, response) in enumerate(zip(rollout.indices, rollout.responses)):
        assert len(response) == 4  # no EOS: every response runs to max_new_tokens
        n = len(prompts[i]) + 4
        assert rollout.tokens[row, :n].tolist() == prompts[i] + response
        assert rollout.response_mask[row].nonzero().flatten().tolist() == list(
            range(len(prompts[i]), n)
        )
    for field in (rollout.logprobs, rollout.ref_logprobs, rollout.values):
        assert field.shape == (B, T)
        assert not field[~rollout.response_mask].any()  # 0 off the response
        assert field[rollout.response_mask].ne(0).all()
    # the reference is a copy of the policy: the same log-probs, at the same temperature
    assert torch.equal(rollout.logprobs, rollout.ref_logprobs)
    # log pi(token t) is read from the logits at t - 1, at the sampling temperature
    logits, _ = model(rollout.tokens[:1])
    row0 = torch.log_softmax(logits[0] / 0.7, dim=-1)
    t = int(rollout.response_mask[0].nonzero()[0])
    assert torch.allclose(rollout.logprobs[0, t], row0[t - 1, rollout.tokens[0, t]])
    assert 0 < rollout.entropy <= torch.log(torch.tensor(float(VOCAB)))
    assert not model.training


def test_rollout_says_which_responses_ended_and_the_penalty_hits_only_the_cut_off_ones():
    policy = make_model(seed=1)
    model, reference = PolicyWithValue(policy), copy.deepcopy(policy)
    prompts = make_prompts(6)
    kwargs = dict(max_new_tokens=4, temperature=1.0, top_p=1.0, pad_id=0, seed=3, chunk_rows=8)
    free = collect_rollout(model, reference, prompts, [0, 1, 2, 3], eos_id=None, **kwargs)
    assert free.ended == [False] * 4  # no EOS id: every response is cut off at 4 tokens
    eos = free.responses[0][0]  # row 0's first token becomes EOS: row 0 ends at once
    rollout = collect_rollout(model, reference, prompts, [0, 1, 2, 3], eos_id=eos, **kwargs)
    assert rollout.responses[0] == [eos] and rollout.ended[0]
    assert rollout.ended == [r[-1] == eos for r in rollout.responses]
    assert all(len(r) == 4 for r, e in zip(rollout.responses, rollout.ended) if not e)
    # cutoff_penalty (default 0, off) lowers the whitened score of the cut-off rows only
    r_c = torch.full((4,), 0.5) + torch.arange(4) * 0.1
    base = PPOConfig(batch_size=4, minibatch_size=4)
    plain = _advantages(rollout, r_c, RunningWhitener(16), base)[0]
    hit = _advantages(
        rollout, r_c, RunningWhitener(16), base.model_copy(update={"cutoff_penalty": 2.0})
    )[0]
    cut = torch.tensor([not e for e in rollout.ended])
    torch.testing.assert_close(plain - hit, 2.0 * cut.float())
