"""Batch and horizon of a pretraining run, derived as nanochat generation 1 does (fact sheet §6.1).

- The batch is fixed in *tokens per optimizer update* (`total_batch_size`, 524,288 = 2¹⁹ by default).
  Gradient accumulation follows from what one forward/backward sees:
  total_batch_size / (per_device_train_batch_size × sequence_len × world_size), which must divide exactly
  (d20 on 8 GPUs with batch 32 → 1; d26 with 16 → 2; d32 with 8 → 4).
- The horizon (number of optimizer updates) is taken from the first of these that is set (> 0):
  `max_steps`, then `target_tokens`, then `target_param_data_ratio` (20 in G1). In ratio mode
  steps = floor(ratio · N_total / total_batch_size), where N_total counts *all* parameters, embeddings
  included (d20 → 21,400; d26 → 41,275; d32 → 71,680). A token target is rounded down the same way.
"""

import dataclasses
from dataclasses import dataclass

from .errors import UserInputError


DEFAULT_TOTAL_BATCH_SIZE = 524_288  # tokens per optimizer update, nanochat G1 (2**19)
DEFAULT_TARGET_PARAM_DATA_RATIO = 20.0  # training tokens per parameter, nanochat G1 (Chinchilla)


@dataclass(frozen=True)
class TrainingPlan:
    """The resolved batch and horizon; `total_tokens` is what the run will consume."""

    num_params: int
    total_batch_size: int
    per_device_train_batch_size: int
    sequence_len: int
    world_size: int
    gradient_accumulation_steps: int
    max_steps: int
    horizon_source: str  # "max_steps", "target_tokens" or "target_param_data_ratio"

    @property
    def total_tokens(self) -> int:
        return self.max_steps * self.total_batch_size

    @property
    def tokens_per_param(self) -> float:
        return self.total_tokens / self.num_params

    def to_dict(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "total_tokens": self.total_tokens,
            "tokens_per_param": self.tokens_per_param,
        }


def _require_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserInputError(f"{name} must be a positive integer, got {value!r}")


def gradient_accumulation_steps(
    total_batch_size: int, per_device_train_batch_size: int, sequence_len: int, world_size: int = 1
) -> int:
    """Micro-steps per optimizer update so that each update sees exactly `total_batch_size` tokens."""
    for name, value in (
        ("total_batch_size", total_batch_size),
        ("per_device_train_batch_size", per_device_train_batch_size),
        ("sequence_len", sequence_len),
        ("world_size", world_size),
    ):
        _require_positive_int(name, value)
    tokens_per_micro_step = per_device_train_batch_size * sequence_len * world_size
    if total_batch_size % tokens_per_micro_step != 0:
        raise UserInputError(
            f"total_batch_size={total_batch_size} tokens is not a multiple of per_device_train_batch_size "
            f"({per_device_train_batch_size}) × sequence_len ({sequence_len}) × world_size ({world_size}) = "
            f"{tokens_per_micro_step} tokens per micro-step; change one of them so it divides exactly"
        )
    return total_batch_size // tokens_per_micro_step


def num_training_steps(
    num_params: int,
    total_batch_size: int = DEFAULT_TOTAL_BATCH_SIZE,
    max_steps: int = -1,
    target_tokens: int = -1,
    target_param_data_ratio: float = DEFAULT_TARGET_PARAM_DATA_RATIO,
) -> tuple[int, str]:
    """(number of optimizer updates, which setting decided it). Values <= 0 mean "not set", as in nanochat."""
    _require_positive_int("total_batch_size", total_batch_size)
    if max_steps > 0:
        return int(max_steps), "max_steps"
    if target_tokens > 0:
        steps = int(target_tokens) // total_batch_size
        if steps == 0:
            raise UserInputError(
                f"target_tokens={target_tokens} is less than one update of total_batch_size={total_batch_size} tokens"
            )
        return steps, "target_tokens"
    if target_param_data_ratio > 0:
        _require_positive_int("num_params", num_params)
        # Integer arithmetic when the ratio is whole (G1's 20), so big models get nanochat's exact floor.
        ratio = float(target_param_data_ratio)
        target = int(ratio) * num_params if ratio.is_integer() else ratio * num_params
        steps = int(target // total_batch_size)
        if steps == 0:
            raise UserInputError(
                f"target_param_data_ratio={target_param_data_ratio} × {num_params} parameters is less than one "
                f"update of total_batch_size={total_batch_size} tokens"
            )
        return steps, "target_param_data_ratio"
    raise UserInputError("no training horizon: set max_steps, target_tokens or target_param_data_ratio to a value > 0")


def plan_training(
    num_params: int,
    *,
    per_device_train_batch_size: int,
    sequence_len: int,
    world_size: int = 1,
    total_batch_size: int = DEFAULT_TOTAL_BATCH_SIZE,
    max_steps: int = -1,
    target_tokens: int = -1,
    target_param_data_ratio: float = DEFAULT_TARGET_PARAM_DATA_RATIO,
) -> TrainingPlan:
    """Resolve gradient accumulation and horizon; `num_params` is `model.num_parameters()` (all of them)."""
    _require_positive_int("num_params", num_params)
    accumulation = gradient_accumulation_steps(total_batch_size, per_device_train_batch_size, sequence_len, world_size)
    steps, source = num_training_steps(num_params, total_batch_size, max_steps, target_tokens, target_param_data_ratio)
    return TrainingPlan(
        num_params=num_params,
        total_batch_size=total_batch_size,
        per_device_train_batch_size=per_device_train_batch_size,
        sequence_len=sequence_len,
        world_size=world_size,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        horizon_source=source,
    )
