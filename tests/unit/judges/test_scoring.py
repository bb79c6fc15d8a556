import numpy as np
import pytest
import torch

from models.llama import IGNORE_INDEX, Llama, tiny
from models.reward import RewardModel
from tasks.chat.format import answer_tokens, prompt_tokens
from tasks.judges.scoring import RewardScorer, kl_along, rm_probs, rm_sequence, win_rates
from tasks.records import dialogue_frame
from tasks.reward.data import encode_pairs
from tasks.rlhf.rounds import best_examples, rounds_table
from tests.unit.reward.test_data import CHOSEN, REJECTED, SYSTEM, TURNS, pair


def test_rm_sequence_is_what_the_reward_model_was_trained_on(sp):
    (encoded,), _, _ = encode_pairs([pair(0)], sp, seq_len=512, margins=[0.0])
    prompt = {"system": SYSTEM, "turns": TURNS, "is_safety": False}
    assert rm_sequence(sp, prompt, CHOSEN, 512) == encoded.chosen
    assert rm_sequence(sp, prompt, f"  {CHOSEN}\n", 512) == encoded.chosen
    # a short window keeps <s>, drops the oldest prompt tokens, keeps the whole answer
    short = rm_sequence(sp, prompt, CHOSEN, 24)
    assert len(short) == 24 and short[0] == encoded.chosen[0] and short[-5:] == encoded.chosen[-5:]


def test_a_cut_off_answer_is_scored_without_eos_and_ended_ids_are_unchanged(sp):
    prompt = {"system": SYSTEM, "turns": TURNS, "is_safety": False}
    head = prompt_tokens(sp, SYSTEM, TURNS)
    # SentencePiece: an ended answer is the same ids as before the ended flag existed
    before = [*sp.encode(f"{CHOSEN.strip()} "), sp.eos_id()]
    assert answer_tokens(sp, f" {CHOSEN}\n", ended=True) == before
    assert rm_sequence(sp, prompt, CHOSEN, 512) == head + before
    # a cut-off answer: the same text tokens, no EOS
    cut = rm_sequence(sp, prompt, CHOSEN, 512, ended=False)
    assert cut == head + before[:-1] and sp.eos_id() not in cut[len(head) :]
    # the scorer passes the flags through: a reward model that sees the EOS tells them apart
    torch.manual_seed(0)
    rm = RewardModel(tiny(vocab_size=sp.vocab_size())).eval()
    scorer = RewardScorer(rm, rm, sp, 512)
    both = scorer.score([prompt, prompt], [CHOSEN, CHOSEN], [True, False])["r_h"]
    assert both[0] == pytest.approx(rm_probs(rm, [head + before])[0])
    assert both[1] == pytest.approx(rm_probs(rm, [cut])[0]) and both[0] != both[1]
    assert scorer.score([prompt], [CHOSEN])["r_h"][0] == pytest.approx(both[0])  # default: ended
    with pytest.raises(ValueError, match="1 ended flags for 2 responses"):
        scorer.score([prompt, prompt], [CHOSEN, CHOSEN], [True])


def test_reward_pairs_with_a_cut_off_member_train_on_it_without_eos(sp):
    (encoded,), _, _ = encode_pairs(
        [dict(pair(0), chosen_ended=True, rejected_ended=False)], sp, seq_len=512, margins=[0.0]
    )
    head = prompt_tokens(sp, SYSTEM, TURNS)
    assert encoded.chosen == head + sp.encode(f"{CHOSEN} ") + [sp.eos_id()]
    assert encoded.rejected == head + sp.encode(f"{REJECTED} ")


def constant_rm(p: float, vocab: int) -> RewardModel:
    """A reward model whose sigmoid score is `p` for every sequence."""
    rm = RewardModel(tiny(vocab_size=vocab))
    with torch.no_grad():
        rm.score_head.weight.zero_()
        rm.score_head.bias.fill_(float(np.log(p / (1 - p))))
    return rm.eval()


@pytest.mark.parametrize(
    "r_s, is_safety, picks",
    [(0.9, True, "r_s"), (0.1, False, "r_s"), (0.15, False, "r_h"), (0.9, False, "r_h")],
)
def test_scorer_gates_to_the_safety_score_in_the_papers_two_cases(sp, r_s, is_safety, picks):
    scorer = RewardScorer(
        constant_rm(0.6, sp.vocab_size()), constant_rm(r_s, sp.vocab_size()), sp, 128
    )
    prompt = {"system": SYSTEM, "turns": TURNS[:1], "is_safety": is_safety}
    out = scorer.score([prompt], ["An answer."])
    assert out["r_h"][0] == pytest.approx(0.6, abs=1e-5) and out["r_s"][0] == pytest.approx(
        r_s, abs=1e-5
    )
    assert out["r_c"][0] == out[picks][0]


def test_kl_along_is_zero_to_itself_and_matches_a_direct_computation():
    torch.manual_seed(0)
    a, b = Llama(tiny(vocab_size=40)).eval(), Llama(tiny(vocab_size=40)).eval()
    prompts, answers = [[1, 5, 7], [1, 9]], [[3, 4], [8, 8, 2]]
    assert kl_along(a, a, prompts, answers) == pytest.approx([0.0, 0.0], abs=1e-6)
    got = kl_along(a, b, prompts, answers, batch_size=1)
    # row 1 by hand: the distributions after [1, 9] and [1, 9, 8] and [1, 9, 8, 8]
    seq = torch.tensor([[1, 9, 8, 8, 2]])
    with torch.no_grad():
        lp, lq = (torch.log_softmax(m(seq)[0][0], -1) for m in (a, b))
    expected = torch.stack([(lp[t].exp() * (lp[t] - lq[t])).sum() for t in (1, 2, 3)]).mean()
    assert got[1] == pytest.approx(float(expected), rel=1e-5) and got[0] > 0
    assert kl_along(a, b, [[1, 2]], [[]]) == [None]


def test_win_rates_count_ties_as_half():
    assert win_rates(np.array([0.9, 0.5, 0.1]), np.array([0.5, 0.5, 0.5])).tolist() == [
        1.0,
        0.5,
        0.0,
    ]


def eval_row(version, order, prompt_id, kind, r_c, kl, win):
    return {
        "version": version,
        "order": order,
        "prompt_id": prompt_id,
        "kind": kind,
        "category": "c",
        "risk_category": None,
        "answer": "x",
        "r_h": r_c,
        "r_s": 0.5,
        "r_c": r_c,
        "kl_to_sft": kl,
        "annotator_score": 0.5,
        "win_vs_sft": win,
    }


def test_rounds_table_means_and_win_rates_per_kind_in_version_order():
    rows = [
        eval_row("sft", 0, "p1", "helpfulness", 0.4, 0.0, 0.5),
        eval_row("sft", 0, "p2", "safety", 0.6, 0.0, 0.5),
        eval_row("rlhf-v1", 1, "p1", "helpfulness", 0.8, 0.2, 1.0),
        eval_row("rlhf-v1", 1, "p2", "safety", 0.4, None, 0.0),
    ]
    table = rounds_table(dialogue_frame(rows, "rlhf_eval"))
    assert table["version"].to_list() == ["sft", "rlhf-v1"]
    v1 = table.row(1, named=True)
    assert (
        v1["mean_r_c"],
        v1["kl_to_sft"],
        v1["helpfulness_win_rate"],
        v1["safety_win_rate"],
    ) == pytest.approx((0.6, 0.2, 1.0, 0.0))


def test_best_examples_train_only_the_best_answer_and_skip_empty_ones(sp):
    base = {
        "round": 1,
        "system": SYSTEM,
        "prompt": TURNS[:1],
        "is_safety": False,
        "category": "c",
        "risk_category": None,
        "reference": None,
        "temperature": 1.0,
        "r_h": 0.5,
        "r_s": 0.5,
        "r_c": 0.5,
        "origin_round": 1,
    }
    rows = [
        dict(base, prompt_id="a", sample=0, response=CHOSEN, is_best=True),
        dict(base, prompt_id="a", sample=1, response="Something else.", is_best=False),
        dict(base, prompt_id="b", sample=0, response="  ", is_best=True),
    ]
    frame, stats = best_examples(dialogue_frame(rows, "rejection_samples"), sp, 256)
    assert (stats["examples"], stats["skipped_empty"]) == (1, 1)
    tokens, labels = frame["tokens"][0].to_list(), frame["labels"][0].to_list()
    trained = [t for t, lab in zip(tokens, labels) if lab != IGNORE_INDEX]
    assert sp.decode(trained).strip() == CHOSEN
