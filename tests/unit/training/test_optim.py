import math

import pytest
import torch

from models.llama import Llama, tiny
from tasks.training.config import TrainConfig
from tasks.training.optim import build_optimizer, build_scheduler, cosine_schedule, param_groups

PEAK = 3e-4


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, PEAK / 10),  # warmup 10: step 0 already trains at peak/10
        (4, PEAK * 5 / 10),
        (9, PEAK),  # the last warmup step reaches the peak
        (10, PEAK),  # cosine starts at the peak
        (55, (PEAK + 0.1 * PEAK) / 2),  # halfway through the decay: mean of peak and floor
        (100, 0.1 * PEAK),  # max_steps: 10 % of peak (§2.2)
        (1000, 0.1 * PEAK),  # constant after
    ],
)
def test_cosine_schedule_boundaries(step, expected):
    assert cosine_schedule(
        step, PEAK, warmup_steps=10, max_steps=100, min_lr_ratio=0.1
    ) == pytest.approx(expected)


def test_cosine_schedule_without_warmup_is_monotone_from_peak():
    lrs = [cosine_schedule(s, PEAK, 0, 50) for s in range(51)]
    assert lrs[0] == pytest.approx(PEAK) and lrs[-1] == pytest.approx(0.1 * PEAK)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_lambda_lr_follows_the_pure_schedule():
    cfg = TrainConfig(max_steps=20, warmup_steps=4, lr=1e-3)
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    for step in range(25):
        # the lr in force for optimizer step `step`
        assert optimizer.param_groups[0]["lr"] == pytest.approx(
            cosine_schedule(step, 1e-3, 4, 20, 0.1)
        )
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    assert all(x is None for x in state["lr_lambdas"])  # no code in the state: weights_only-safe


def test_weight_decay_only_on_matrices_not_norms_or_embeddings():
    model = Llama(tiny())
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "tok_embeddings.weight" in kept and "norm.weight" in kept
    assert all(n.endswith("norm.weight") for n in kept - {"tok_embeddings.weight"})
    assert "output.weight" in decayed and "layers.0.attention.wq.weight" in decayed
    assert "layers.1.feed_forward.w2.weight" in decayed
    assert len(decayed) + len(kept) == len(list(model.parameters()))
    # 2 layers x (wq wk wv wo w1 w2 w3) + output
    assert len(decayed) == 2 * 7 + 1


def test_tied_embedding_is_one_undecayed_parameter():
    cfg = tiny()
    cfg.tie_embeddings = True
    model = Llama(cfg)
    decay, no_decay = param_groups(model, 0.1)
    assert not any(p is model.tok_embeddings.weight for p in decay["params"])
    assert sum(p is model.tok_embeddings.weight for p in no_decay["params"]) == 1


def test_optimizer_uses_paper_hyperparameters():
    opt = build_optimizer(Llama(tiny()), TrainConfig(max_steps=10, warmup_steps=2))
    group = opt.param_groups[0]
    assert (
        group["betas"] == (0.9, 0.95) and group["eps"] == 1e-5 and math.isclose(group["lr"], 3e-4)
    )


def test_config_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(max_steps=100)  # the paper's 2000 warmup steps in a 100-step run
    with pytest.raises(ValueError, match="deepspeed"):
        TrainConfig(max_steps=10, warmup_steps=1, zero_stage=2)
    with pytest.raises(ValueError):
        TrainConfig(max_steps=10, warmup_steps=1, learning_rate=1e-3)  # unknown key
