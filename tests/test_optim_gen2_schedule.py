"""Generation 2's LR, momentum and weight-decay schedules, and the LambdaLR the Trainer steps."""

import math

import pytest
import torch

from nanochat_hf.errors import UserInputError
from nanochat_hf.optim import (
    NanoChatGen2MuonAdamW,
    gen2_lr_multiplier,
    gen2_muon_momentum,
    gen2_muon_weight_decay,
    get_gen2_schedule,
    get_gen2_sft_schedule,
    sft_lr_multiplier,
)


N = 1000  # warm-down round(0.65·1000) = 650 updates, starting after update 350


def test_lr_multiplier_warmup_constant_warmdown():
    lr = [gen2_lr_multiplier(it, num_training_steps=N) for it in range(N)]
    assert lr[0] == 1 / 40 and lr[38] == 39 / 40 and lr[39] == 1.0  # 40 absolute warm-up steps
    assert all(value == 1.0 for value in lr[40:351])
    assert lr[351] == pytest.approx((649 / 650) + (1 / 650) * 0.05)
    assert lr[N - 1] == pytest.approx(1 / 650 + (649 / 650) * 0.05)  # the last update is above the floor
    assert gen2_lr_multiplier(N, num_training_steps=N) == 0.05
    assert all(a >= b for a, b in zip(lr[40:], lr[41:], strict=False))


def test_muon_momentum_warms_up_to_0_97_then_down_to_0_90():
    momentum = [gen2_muon_momentum(it, num_iterations=N) for it in range(N)]
    assert momentum[0] == 0.85 and momentum[200] == pytest.approx(0.91)
    assert momentum[399] == pytest.approx(0.85 + 0.12 * 399 / 400)
    # Warm-down starts at 350 but the warm-up wins below 400 (as in nanochat); from 400 on it decays.
    assert momentum[400] == pytest.approx(0.97 - 0.07 * 50 / 650)
    assert momentum[N - 1] == pytest.approx(0.97 - 0.07 * 649 / 650)
    long_run = [gen2_muon_momentum(it, num_iterations=10_000) for it in (400, 3499, 3500, 9999)]
    assert long_run[:2] == [0.97, 0.97] and long_run[2] == 0.97 and long_run[3] == pytest.approx(0.90, abs=1e-4)
    assert gen2_muon_momentum(5000, num_iterations=None) == 0.97  # no horizon: no warm-down


def test_muon_weight_decay_is_a_cosine_to_zero():
    values = [gen2_muon_weight_decay(it, initial=0.06, num_iterations=N) for it in (0, 250, 500, 750, N)]
    assert values[0] == 0.06 and values[2] == pytest.approx(0.03) and values[4] == pytest.approx(0.0, abs=1e-18)
    assert values[1] == pytest.approx(0.06 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert gen2_muon_weight_decay(10, initial=0.06, schedule="constant", num_iterations=N) == 0.06


def test_sft_multiplier_is_flat_then_linear_to_zero():
    values = [sft_lr_multiplier(it, num_training_steps=10) for it in range(10)]
    assert values[:5] == [1.0] * 5  # progress (it+1)/N ≤ 0.5
    assert values[5] == pytest.approx(0.8) and values[9] == pytest.approx(0.0)


def muon_group_optimizer(num_iterations=None):
    weight = torch.nn.Parameter(torch.randn(8, 4))
    adam = torch.nn.Parameter(torch.randn(3))
    return NanoChatGen2MuonAdamW(
        [
            {
                "kind": "muon",
                "name": "m",
                "params": [weight],
                "lr": 0.02,
                "weight_decay": 0.1,
                "num_iterations": num_iterations,
            },
            {"kind": "adamw", "name": "a", "params": [adam], "lr": 0.3},
        ]
    ), (weight, adam)


def test_lambda_lr_drives_every_group_and_sets_the_muon_horizon():
    optimizer, params = muon_group_optimizer()
    scheduler = get_gen2_schedule(optimizer, 100, warmup_steps=4)
    assert [group["num_iterations"] for group in optimizer.param_groups if group["kind"] == "muon"] == [100]
    seen = []
    for it in range(100):
        for param in params:
            param.grad = torch.ones_like(param)
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
        muon = optimizer.param_groups[0]
        assert muon["momentum"] == gen2_muon_momentum(it, num_iterations=100)
        assert muon["weight_decay"] == gen2_muon_weight_decay(it, initial=0.1, num_iterations=100)
    for it, (muon_lr, adam_lr) in enumerate(seen):
        multiplier = gen2_lr_multiplier(it, num_training_steps=100, warmup_steps=4)
        assert muon_lr == pytest.approx(0.02 * multiplier) and adam_lr == pytest.approx(0.3 * multiplier)


def test_sft_schedule_is_a_lambda_lr_too():
    optimizer, _ = muon_group_optimizer()
    scheduler = get_gen2_sft_schedule(optimizer, 10)
    assert scheduler.get_last_lr() == [0.02, 0.3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_training_steps": 0}, "num_training_steps must be a positive"),
        ({"num_training_steps": 10, "warmup_steps": -1}, "warmup_steps must be in"),
        ({"num_training_steps": 10, "warmdown_ratio": 1.5}, "warmdown_ratio must be in"),
        ({"num_training_steps": 10, "final_lr_frac": float("nan")}, "final_lr_frac must be a finite"),
    ],
)
def test_schedule_errors(kwargs, message):
    optimizer, _ = muon_group_optimizer()
    with pytest.raises(UserInputError, match=message):
        get_gen2_schedule(optimizer, **kwargs)
