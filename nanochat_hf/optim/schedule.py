"""nanochat generation-1 schedules: the learning-rate multiplier and the Muon momentum warm-up.

Both are pure functions of the update index `it` (0 for the first optimizer update), written exactly as
nanochat's `scripts/base_train.py` computes them:

- LR multiplier, with N updates, w_up = round(warmup_ratio·N), w_dn = round(warmdown_ratio·N):
  (it+1)/w_up during warm-up, 1.0 while it ≤ N − w_dn, then linear down to final_lr_frac at it = N.
  The last executed update (it = N−1) therefore still uses 1/w_dn, not 0.
- Muon momentum: μ(it) = 0.85·(1−f) + 0.95·f with f = min(it/300, 1).

The LR multiplier is handed to the Trainer as a `LambdaLR`, which multiplies every param group's own
`initial_lr`, so nanochat's per-group learning rates (matrix / embedding / unembedding) survive. The
momentum warm-up is applied by `NanoChatMuonAdamW` itself from its own update counter (see that module
for why), so this file only defines the formula.
"""

from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ..errors import UserInputError


def nanochat_lr_multiplier(
    it: int,
    *,
    num_training_steps: int,
    warmup_ratio: float = 0.0,
    warmdown_ratio: float = 0.2,
    final_lr_frac: float = 0.0,
) -> float:
    """LR multiplier for update `it` (0-based) of a run with `num_training_steps` updates (nanochat's get_lr_multiplier)."""
    # Python's round(), as nanochat uses: the warm-up/warm-down lengths must match its integer values.
    return warmup_constant_warmdown(
        it,
        num_training_steps=num_training_steps,
        warmup_steps=round(warmup_ratio * num_training_steps),
        warmdown_steps=round(warmdown_ratio * num_training_steps),
        final_lr_frac=final_lr_frac,
    )


def warmup_constant_warmdown(
    it: int, *, num_training_steps: int, warmup_steps: int, warmdown_steps: int, final_lr_frac: float
) -> float:
    """(it+1)/warmup_steps, then 1.0 while it ≤ N − warmdown_steps, then linear to final_lr_frac at it = N."""
    if it < warmup_steps:
        return (it + 1) / warmup_steps
    if it <= num_training_steps - warmdown_steps:
        return 1.0
    if it >= num_training_steps:
        # Only reached after the last update (the Trainer steps the scheduler once more) or with
        # warmdown_steps == 0, where nanochat's formula would divide by zero; both mean "the end".
        return final_lr_frac
    progress = (num_training_steps - it) / warmdown_steps
    return progress + (1 - progress) * final_lr_frac


def get_nanochat_schedule(
    optimizer: Optimizer,
    num_training_steps: int,
    warmup_ratio: float = 0.0,
    warmdown_ratio: float = 0.2,
    final_lr_frac: float = 0.0,
    last_epoch: int = -1,
) -> LambdaLR:
    """nanochat G1's warm-up / constant / linear warm-down schedule as a `LambdaLR`.

    Defaults are G1 base training's (warmup_ratio 0, warmdown_ratio 0.2, final_lr_frac 0). The Trainer
    calls `scheduler.step()` after each optimizer update, so update `it` runs with multiplier(it), as in
    nanochat. The multiplier is a `functools.partial` (like transformers' own schedules): its settings
    are not stored in the scheduler's state_dict, only the step counter is, so a resumed run uses the
    horizon it is started with.
    """
    if num_training_steps <= 0:
        raise UserInputError(f"num_training_steps must be a positive number of updates, got {num_training_steps}")
    for key, value in (("warmup_ratio", warmup_ratio), ("warmdown_ratio", warmdown_ratio)):
        if not 0.0 <= value <= 1.0:
            raise UserInputError(f"{key} must be in [0, 1], got {value}")
    if warmup_ratio + warmdown_ratio > 1.0:
        raise UserInputError(f"warmup_ratio ({warmup_ratio}) + warmdown_ratio ({warmdown_ratio}) must not exceed 1")
    if not 0.0 <= final_lr_frac <= 1.0:
        raise UserInputError(f"final_lr_frac must be in [0, 1], got {final_lr_frac}")
    multiplier = partial(
        nanochat_lr_multiplier,
        num_training_steps=num_training_steps,
        warmup_ratio=warmup_ratio,
        warmdown_ratio=warmdown_ratio,
        final_lr_frac=final_lr_frac,
    )
    return LambdaLR(optimizer, multiplier, last_epoch=last_epoch)


def muon_momentum(it: int, start: float = 0.85, end: float = 0.95, warmup_steps: int = 300) -> float:
    """Muon momentum for update `it`: linear from `start` to `end` over `warmup_steps` updates (0.85 -> 0.95 over 300).

    The operation order is nanochat's, `(1 - f)·start + f·end`, so the floats are identical.
    `warmup_steps <= 0` means a constant `end` (as in G1's SFT, which does not schedule momentum).
    """
    if warmup_steps <= 0:
        return end
    frac = min(it / warmup_steps, 1)
    return (1 - frac) * start + frac * end
