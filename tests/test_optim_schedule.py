"""nanochat generation 1's LR schedule and Muon momentum warm-up (scripts/base_train.py)."""

import pytest
import torch
from torch import nn

from nanochat_hf.errors import UserInputError
from nanochat_hf.optim import NanoChatMuonAdamW, get_nanochat_schedule, muon_momentum, nanochat_lr_multiplier


def test_lr_multiplier_at_chosen_steps_of_the_d20_run():
    # d20: N = 21,400 updates; warmdown_ratio 0.2 → w_dn = 4,280, no warm-up, final_lr_frac 0.
    n, w_dn = 21_400, 4_280

    def multiplier(it):
        return nanochat_lr_multiplier(it, num_training_steps=n)

    assert multiplier(0) == 1.0
    assert multiplier(n - w_dn) == 1.0  # last constant update: "it ≤ N − w_dn"
    assert multiplier(n - w_dn + 1) == (w_dn - 1) / w_dn  # first warm-down update
    assert multiplier(n - 1) == 1 / w_dn  # the last executed update is not at 0
    assert multiplier(n) == 0.0


def test_warmup_and_final_lr_frac():
    kwargs = dict(num_training_steps=10, warmup_ratio=0.2, warmdown_ratio=0.2, final_lr_frac=0.1)
    values = [nanochat_lr_multiplier(it, **kwargs) for it in range(11)]
    # w_up = 2: (it+1)/2; constant through it = 8; then progress + (1 − progress)·0.1 with progress = (10 − it)/2.
    assert values == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5 + 0.5 * 0.1, 0.1]


def test_no_warmdown_keeps_the_lr_constant():
    assert [nanochat_lr_multiplier(it, num_training_steps=4, warmdown_ratio=0.0) for it in range(6)] == [
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
        0.0,
    ]


def two_group_optimizer():
    groups = [
        {"kind": "muon", "name": "matrices", "params": [nn.Parameter(torch.zeros(4, 4))], "lr": 0.02},
        {"kind": "adamw", "name": "embedding", "params": [nn.Parameter(torch.zeros(8, 4))], "lr": 0.3},
    ]
    return NanoChatMuonAdamW(groups)


def test_lambda_lr_scales_each_groups_own_lr():
    optimizer = two_group_optimizer()
    scheduler = get_nanochat_schedule(optimizer, num_training_steps=10)
    seen = []
    for _ in range(10):
        seen.append([group["lr"] for group in optimizer.param_groups])  # LR used by this update
        optimizer.step()
        scheduler.step()
    # N = 10, w_dn = 2: updates 0..8 at the full LR, update 9 at 1/w_dn.
    assert seen == [[0.02, 0.3]] * 9 + [[0.02 * 0.5, 0.3 * 0.5]]
    assert [group["lr"] for group in optimizer.param_groups] == [0.0, 0.0]


def test_scheduler_state_round_trip():
    optimizer = two_group_optimizer()
    scheduler = get_nanochat_schedule(optimizer, num_training_steps=10)
    for _ in range(9):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()

    resumed_optimizer = two_group_optimizer()
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed = get_nanochat_schedule(resumed_optimizer, num_training_steps=10)
    resumed.load_state_dict(state)
    resumed_optimizer.step()
    resumed.step()
    optimizer.step()
    scheduler.step()
    assert resumed.last_epoch == scheduler.last_epoch == 10
    assert [g["lr"] for g in resumed_optimizer.param_groups] == [g["lr"] for g in optimizer.param_groups]


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"num_training_steps": 0}, "num_training_steps"),
        ({"num_training_steps": 10, "warmdown_ratio": 1.5}, "warmdown_ratio"),
        ({"num_training_steps": 10, "warmup_ratio": 0.6, "warmdown_ratio": 0.6}, "warmup_ratio"),
        ({"num_training_steps": 10, "final_lr_frac": -0.1}, "final_lr_frac"),
    ],
)
def test_invalid_schedule_settings_raise(kwargs, key):
    with pytest.raises(UserInputError, match=key):
        get_nanochat_schedule(two_group_optimizer(), **kwargs)


def test_muon_momentum_warmup():
    # μ(it) = 0.85·(1 − f) + 0.95·f, f = min(it/300, 1)
    assert muon_momentum(0) == 0.85
    assert muon_momentum(150) == pytest.approx(0.90, abs=1e-12)
    assert muon_momentum(300) == 0.95
    assert muon_momentum(10_000) == 0.95
    assert muon_momentum(7, warmup_steps=0) == 0.95
