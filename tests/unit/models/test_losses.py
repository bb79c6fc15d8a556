import math

import pytest
import torch

from models.losses import MARGINS, RATINGS, accuracy, margins_for, pairwise_loss, safety_aux_loss


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# --- margins ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme, expected",
    [
        ("none", [0.0, 0.0, 0.0, 0.0]),
        ("small", [1.0, 2 / 3, 1 / 3, 0.0]),  # Table 27, small margin
        ("large", [3.0, 2.0, 1.0, 0.0]),  # Table 27, large margin
    ],
)
def test_margin_table_per_rating_and_scheme(scheme, expected):
    # RATINGS strongest first: significantly better, better, slightly better, negligibly better
    torch.testing.assert_close(margins_for(RATINGS, scheme), torch.tensor(expected))


def test_margins_follow_the_order_of_the_ratings_given():
    m = margins_for(["negligibly_better", "significantly_better", "better", "better"], "large")
    assert m.tolist() == [0.0, 3.0, 2.0, 2.0] and m.dtype == torch.float32


def test_margins_never_grow_as_the_rating_weakens():
    for values in MARGINS.values():
        assert list(values) == sorted(values, reverse=True)


def test_unknown_scheme_or_rating_is_a_clear_error():
    with pytest.raises(ValueError, match="margin scheme 'huge'"):
        margins_for(["better"], "huge")
    with pytest.raises(ValueError, match="much_better"):
        margins_for(["better", "much_better"], "small")


# --- pairwise loss ------------------------------------------------------------------------


def test_pairwise_loss_by_hand():
    # r_c = 2, r_r = 1, no margin: -logsigmoid(1) = log(1 + e^-1) = 0.31326
    assert pairwise_loss(t(2.0), t(1.0)).item() == pytest.approx(0.313262, abs=1e-6)
    # margin 1 cancels the gap: -logsigmoid(0) = log 2 = 0.69315
    assert pairwise_loss(t(2.0), t(1.0), t(1.0)).item() == pytest.approx(math.log(2), abs=1e-6)
    # mean over pairs: gaps 1 and -1 -> (0.31326 + 1.31326) / 2 = 0.81326
    assert pairwise_loss(t(2.0, 0.0), t(1.0, 1.0)).item() == pytest.approx(0.813262, abs=1e-6)


def test_a_margin_raises_the_loss_of_a_right_ranking():
    # gap 1, large margin 3: -logsigmoid(-2) = 2.12693 > 0.31326
    assert pairwise_loss(t(2.0), t(1.0), t(3.0)).item() == pytest.approx(2.126928, abs=1e-6)


def test_pairwise_loss_is_stable_at_extreme_gaps():
    # right by 2e4: loss -> 0; wrong by 2e4: -logsigmoid(-2e4) = 2e4 (log(sigmoid) would be inf)
    right = pairwise_loss(t(1e4), t(-1e4))
    wrong = pairwise_loss(t(-1e4), t(1e4))
    assert torch.isfinite(right) and right.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(wrong) and wrong.item() == pytest.approx(2e4, rel=1e-6)
    r_c = t(-1e4).requires_grad_()
    pairwise_loss(r_c, t(1e4)).backward()
    assert r_c.grad.item() == pytest.approx(-1.0)  # d/dr_c = -(1 - sigmoid(gap)) -> -1, finite


def test_gradient_pushes_chosen_up_and_rejected_down():
    # d loss / d r_c = -sigmoid(-(gap - m)) = -sigmoid(-1) = -0.26894; d / d r_r = +0.26894
    r_c, r_r = t(2.0).requires_grad_(), t(1.0).requires_grad_()
    pairwise_loss(r_c, r_r).backward()
    assert r_c.grad.item() == pytest.approx(-0.268941, abs=1e-6)
    assert r_r.grad.item() == pytest.approx(0.268941, abs=1e-6)
    assert pairwise_loss(t(2.5), t(1.0)) < pairwise_loss(t(2.0), t(1.0))  # r_c rises, loss falls


def test_pairwise_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="scores"):
        pairwise_loss(t(1.0, 2.0), t(1.0))
    with pytest.raises(ValueError, match="margin"):
        pairwise_loss(t(1.0, 2.0), t(1.0, 1.0), t(1.0))


# --- safety auxiliary loss ----------------------------------------------------------------


def test_safety_aux_loss_by_hand():
    # safe with score 0: -log sigmoid(0) = log 2; unsafe with score 2: -log(1 - sigmoid(2)) =
    # -logsigmoid(-2) = 2.12693; mean = (0.69315 + 2.12693) / 2 = 1.41004
    loss = safety_aux_loss(t(0.0, 2.0), t(1.0, 0.0))
    assert loss.item() == pytest.approx((math.log(2) + 2.126928) / 2, abs=1e-6)


def test_safety_aux_loss_ignores_unlabelled_rows():
    labelled = safety_aux_loss(t(0.0, 2.0), t(1.0, 0.0))
    scores = t(0.0, 2.0, 50.0, -7.0).requires_grad_()
    mixed = safety_aux_loss(scores, t(1.0, 0.0, -1.0, -1.0))
    assert mixed.item() == pytest.approx(labelled.item(), abs=1e-7)
    mixed.backward()
    assert scores.grad[2:].tolist() == [0.0, 0.0]  # no gradient to unlabelled responses


def test_safety_aux_loss_without_labels_is_a_zero_with_a_graph():
    scores = t(1.0, -3.0).requires_grad_()
    loss = safety_aux_loss(scores, t(-1.0, -1.0))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert scores.grad.tolist() == [0.0, 0.0]


def test_safety_aux_loss_is_stable_and_pushes_safe_scores_up():
    loss = safety_aux_loss(t(-1e4, 1e4), t(1.0, 0.0))  # both confidently wrong: 1e4 each
    assert torch.isfinite(loss) and loss.item() == pytest.approx(1e4, rel=1e-6)
    scores = t(0.0, 0.0).requires_grad_()
    safety_aux_loss(scores, t(1.0, 0.0)).backward()
    assert scores.grad[0] < 0 < scores.grad[1]  # descent raises the safe one, lowers the unsafe


def test_safety_aux_loss_rejects_other_labels():
    with pytest.raises(ValueError, match="safe labels"):
        safety_aux_loss(t(0.0, 0.0), t(1.0, 2.0))


# --- accuracy -----------------------------------------------------------------------------


def test_accuracy_counts_strict_wins():
    # wins: 3 > 1 yes, 0 > 2 no, 1 > 1 no (a tie is not a win), 5 > -5 yes -> 2 / 4
    assert accuracy(t(3.0, 0.0, 1.0, 5.0), t(1.0, 2.0, 1.0, -5.0)) == 0.5
