"""nanochat generation 2's schedules: the LR multiplier, Muon's momentum and Muon's weight decay.

All are pure functions of the update index `it` (0 for the first update) and the horizon N, written as
nanochat's 2026 `scripts/base_train.py` computes them, with w_dn = round(warmdown_ratio·N) (Python's
round, as nanochat) and warm-down start s = N − w_dn:

- LR multiplier: (it+1)/warmup_steps for it < warmup_steps (40 absolute updates, not a ratio); 1.0 while
  it ≤ s; then p = (N − it)/w_dn and p + (1 − p)·final_lr_frac (final 0.05). The last update (N−1) still
  runs at p = 1/w_dn, slightly above the floor.
- Muon momentum: 0.85 → 0.97 linearly over the first 400 updates, 0.97 until s, then 0.97 → 0.90 linearly
  over the warm-down (q = (it − s)/w_dn). The warm-up wins where the two overlap (short runs).
- Muon weight decay: λ(it) = λ·½·(1 + cos(π·it/N)), a cosine from the scaled λ to 0.

Chat SFT (`chat_sft.py`) uses progress through the data instead of it/N; with a known number of updates
the progress after update `it`'s micro-batches is (it+1)/N, so `sft_lr_multiplier` is 1.0 up to half-way
and then linear to final_lr_frac 0 (the last update runs at 0, as in nanochat); momentum 0.85 → 0.95 over
300 updates, no warm-down.

The LR multiplier reaches the Trainer as a `LambdaLR` over every group's own `initial_lr` (so the per-group
LRs survive). Momentum and weight decay are applied by `NanoChatGen2MuonAdamW` itself from its own update
counter, saved in its state dict, so they resume exactly (the same design as generation 1's momentum).
"""

import logging
import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ..errors import UserInputError
from .checks import check_number
from .schedule import warmup_constant_warmdown


logger = logging.getLogger(__name__)

WARMUP_STEPS = 40
WARMDOWN_RATIO = 0.65
FINAL_LR_FRAC = 0.05
MOMENTUM_START = 0.85
MOMENTUM_PEAK = 0.97
MOMENTUM_WARMUP_STEPS = 400
MOMENTUM_END = 0.90


def warmdown_steps(num_iterations: int, warmdown_ratio: float) -> int:
    return round(warmdown_ratio * num_iterations)


def gen2_lr_multiplier(
    it: int,
    *,
    num_training_steps: int,
    warmup_steps: int = WARMUP_STEPS,
    warmdown_ratio: float = WARMDOWN_RATIO,
    final_lr_frac: float = FINAL_LR_FRAC,
) -> float:
    """LR multiplier for update `it` of `num_training_steps` (see the module docstring)."""
    return warmup_constant_warmdown(
        it,
        num_training_steps=num_training_steps,
        warmup_steps=warmup_steps,
        warmdown_steps=warmdown_steps(num_training_steps, warmdown_ratio),
        final_lr_frac=final_lr_frac,
    )


def sft_lr_multiplier(
    it: int,
    *,
    num_training_steps: int,
    warmup_ratio: float = 0.0,
    warmdown_ratio: float = 0.5,
    final_lr_frac: float = 0.0,
) -> float:
    """nanochat 2026 chat SFT's multiplier at progress (it+1)/N (see the module docstring)."""
    progress = min((it + 1) / num_training_steps, 1.0)
    if progress < warmup_ratio:
        return (progress + 1e-8) / warmup_ratio
    if progress <= 1.0 - warmdown_ratio:
        return 1.0
    decay = (progress - (1.0 - warmdown_ratio)) / warmdown_ratio
    return (1 - decay) * 1.0 + decay * final_lr_frac


def gen2_muon_momentum(
    it: int,
    *,
    num_iterations: int | None = None,
    start: float = MOMENTUM_START,
    peak: float = MOMENTUM_PEAK,
    warmup_steps: int = MOMENTUM_WARMUP_STEPS,
    end: float = MOMENTUM_END,
    warmdown_ratio: float = WARMDOWN_RATIO,
) -> float:
    """Muon momentum for update `it`; `num_iterations=None` (or no warm-down) keeps `peak` after warm-up."""
    warmdown = warmdown_steps(num_iterations, warmdown_ratio) if num_iterations else 0
    warmdown_start = num_iterations - warmdown if warmdown else None
    if it < warmup_steps:
        frac = it / warmup_steps
        return (1 - frac) * start + frac * peak
    if warmdown_start is not None and it >= warmdown_start:
        progress = min((it - warmdown_start) / warmdown, 1.0)
        return peak * (1 - progress) + end * progress
    return peak


def gen2_muon_weight_decay(
    it: int, *, initial: float, num_iterations: int | None = None, schedule: str = "cosine"
) -> float:
    """Muon weight decay for update `it`: cosine from `initial` to 0 over `num_iterations`, or constant."""
    if schedule == "constant" or not num_iterations:
        return initial
    return initial * 0.5 * (1 + math.cos(math.pi * min(it, num_iterations) / num_iterations))


def _check_schedule(num_training_steps, **values) -> None:
    if isinstance(num_training_steps, bool) or not isinstance(num_training_steps, int) or num_training_steps <= 0:
        raise UserInputError(f"num_training_steps must be a positive number of updates, got {num_training_steps!r}")
    for key, value in values.items():
        if key == "warmup_steps":
            check_number(key, value, low=0, whole=True)
        else:
            check_number(key, value, low=0.0, high=1.0)


def _set_optimizer_horizon(optimizer: Optimizer, num_training_steps: int) -> None:
    # One horizon for everything: Muon's momentum warm-down and weight-decay cosine follow the number of
    # updates the scheduler is built for (the Trainer's max_steps). A resumed run then loads the saved
    # groups, which carry the same horizon.
    for group in optimizer.param_groups:
        if group.get("kind") == "muon" and "num_iterations" in group:
            if group["num_iterations"] not in (None, num_training_steps):
                logger.info(
                    "Muon group %s: horizon %s -> %s (the scheduler's)",
                    group.get("name"),
                    group["num_iterations"],
                    num_training_steps,
                )
            group["num_iterations"] = num_training_steps


def get_gen2_schedule(
    optimizer: Optimizer,
    num_training_steps: int,
    warmup_steps: int = WARMUP_STEPS,
    warmdown_ratio: float = WARMDOWN_RATIO,
    final_lr_frac: float = FINAL_LR_FRAC,
    last_epoch: int = -1,
) -> LambdaLR:
    """nanochat 2026's warm-up (absolute steps) / constant / warm-down LR schedule as a `LambdaLR`.

    Also writes `num_training_steps` into the Muon groups of a `NanoChatGen2MuonAdamW` as their horizon.
    As with generation 1's schedule, the multiplier is a `functools.partial`: only the step counter goes
    into the scheduler's state dict.
    """
    _check_schedule(
        num_training_steps, warmup_steps=warmup_steps, warmdown_ratio=warmdown_ratio, final_lr_frac=final_lr_frac
    )
    if warmup_steps + warmdown_steps(num_training_steps, warmdown_ratio) > num_training_steps:
        logger.warning(
            "LR warm-up (%d updates) and warm-down (%d) overlap in a run of %d updates: the warm-up wins where "
            "they overlap, as in nanochat",
            warmup_steps,
            warmdown_steps(num_training_steps, warmdown_ratio),
            num_training_steps,
        )
    return _lambda_lr(
        optimizer,
        gen2_lr_multiplier,
        num_training_steps,
        last_epoch,
        warmup_steps=warmup_steps,
        warmdown_ratio=warmdown_ratio,
        final_lr_frac=final_lr_frac,
    )


def get_gen2_sft_schedule(
    optimizer: Optimizer,
    num_training_steps: int,
    warmup_ratio: float = 0.0,
    warmdown_ratio: float = 0.5,
    final_lr_frac: float = 0.0,
    last_epoch: int = -1,
) -> LambdaLR:
    """nanochat 2026 chat SFT's progress-based LR schedule as a `LambdaLR` (see `sft_lr_multiplier`)."""
    _check_schedule(
        num_training_steps, warmup_ratio=warmup_ratio, warmdown_ratio=warmdown_ratio, final_lr_frac=final_lr_frac
    )
    if warmup_ratio + warmdown_ratio > 1.0:
        raise UserInputError(f"warmup_ratio ({warmup_ratio}) + warmdown_ratio ({warmdown_ratio}) must not exceed 1")
    return _lambda_lr(
        optimizer,
        sft_lr_multiplier,
        num_training_steps,
        last_epoch,
        warmup_ratio=warmup_ratio,
        warmdown_ratio=warmdown_ratio,
        final_lr_frac=final_lr_frac,
    )


def _lambda_lr(optimizer: Optimizer, multiplier, num_training_steps: int, last_epoch: int, **settings) -> LambdaLR:
    _set_optimizer_horizon(optimizer, num_training_steps)
    return LambdaLR(
        optimizer, partial(multiplier, num_training_steps=num_training_steps, **settings), last_epoch=last_epoch
    )
