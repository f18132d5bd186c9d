"""Batch and horizon of a pretraining run, derived as nanochat generation 1 does.

- The batch is fixed in *tokens per optimizer update* (`total_batch_size`, 524,288 = 2¹⁹ by default).
  Gradient accumulation follows from what one forward/backward sees:
  total_batch_size / (per_device_train_batch_size × sequence_len × world_size), which must divide exactly
  (on 8 GPUs at 2,048 tokens: d20 with micro-batch 32 → 1; d26 with 16 → 2; d32 with 8 → 4).
- The horizon (number of optimizer updates) is taken from the first of these that is set (> 0):
  `max_steps`, then `target_tokens`, then `target_param_data_ratio` (20 in generation 1). In ratio mode
  steps = floor(ratio · N_total / total_batch_size), where N_total counts *all* parameters, embeddings
  included (d20 → 21,400; d26 → 41,275; d32 → 71,680). A token target is rounded down the same way.

`Horizon` is the one description of how long a run is: the recipe builds it from the model's parameter
count, the planner from a model shape (`training_horizon`), so both agree on the step count.
"""

import dataclasses
import math
from dataclasses import dataclass

from nanochat_hf.defaults import PARAM_DATA_RATIO, TOTAL_BATCH_SIZE
from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.flops import ModelShape, flops_per_token, param_counts


@dataclass(frozen=True)
class Horizon:
    """How long pretraining runs: `steps` optimizer updates of `total_batch_size` tokens each."""

    num_params: int  # all parameters, embeddings included
    total_batch_size: int  # tokens per optimizer update, all processes together
    steps: int
    source: str  # the setting that decided: "max_steps", "target_tokens" or "target_param_data_ratio"
    target: float  # that setting's value
    flops_per_token: int  # training FLOPs per token (forward + backward)
    scaling_params: int | None = None  # generation 2: what its ratio counts (block matrices + lm_head)

    @property
    def tokens(self) -> int:
        return self.steps * self.total_batch_size

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.num_params

    @property
    def total_flops(self) -> int:
        return self.tokens * self.flops_per_token

    def describe_source(self) -> str:
        """What decided the length, for people: "20 tokens per parameter", "3.758e+10 tokens", "500 steps"."""
        if self.source == "target_tokens":
            return f"{self.target:.4g} tokens"
        if self.source == "target_param_data_ratio":
            counted = "parameters" if self.scaling_params is None else "scaling parameters"
            return f"ratio {self.target:g} x {counted}"
        return f"{self.steps:,} steps"

    def to_dict(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "tokens": self.tokens,
            "tokens_per_param": self.tokens_per_param,
            "total_flops": self.total_flops,
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
    total_batch_size: int = TOTAL_BATCH_SIZE,
    max_steps: int = -1,
    target_tokens: int = -1,
    target_param_data_ratio: float = PARAM_DATA_RATIO,
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


def plan_horizon(
    num_params: int,
    flops_per_token: int,
    *,
    total_batch_size: int = TOTAL_BATCH_SIZE,
    max_steps: int = -1,
    target_tokens: float = -1,
    target_param_data_ratio: float = PARAM_DATA_RATIO,
) -> Horizon:
    """The horizon of a run; `num_params` is `model.num_parameters()` (all of them)."""
    _require_positive_int("num_params", num_params)
    steps, source = num_training_steps(
        num_params, total_batch_size, max_steps, int(target_tokens), target_param_data_ratio
    )
    target = {"max_steps": steps, "target_tokens": target_tokens, "target_param_data_ratio": target_param_data_ratio}
    return Horizon(num_params, total_batch_size, steps, source, target[source], flops_per_token)


def training_horizon(
    shape: ModelShape,
    *,
    target_tokens: float | None = None,
    target_param_data_ratio: float | None = None,
    total_batch_size: int = TOTAL_BATCH_SIZE,
) -> Horizon:
    """The horizon of a model given by its shape: `target_tokens`, else the ratio (20 when neither is given)."""
    if target_tokens is not None and target_param_data_ratio is not None:
        raise UserInputError("give either target_tokens or target_param_data_ratio, not both")
    return plan_horizon(
        param_counts(shape).total,
        flops_per_token(shape),
        total_batch_size=total_batch_size,
        target_tokens=-1 if target_tokens is None else target_tokens,
        target_param_data_ratio=PARAM_DATA_RATIO if target_param_data_ratio is None else target_param_data_ratio,
    )


# ---------------------------------------------------------------------------------------------------------
# Generation 2 (nanochat 2026): the horizon counts *scaling* parameters (block matrices + lm_head), 12 per
# token by default (8 in the GPT-2 speedrun), and the total batch follows the horizon (Power Lines,
# arXiv 2505.13738: B_opt ∝ D^0.383), anchored at 2^19 tokens for the d12 reference trained at the same ratio:
#     B = 2^round(log2(2^19 · (D / D_d12)^0.383)).  The ratio cancels in D / D_d12, so B depends on the depth only.

GEN2_REFERENCE_BATCH_SIZE = 2**19
GEN2_BATCH_SIZE_EXPONENT = 0.383
GEN2_REFERENCE_DEPTH = 12
GEN2_RATIO = 12.0
GPT2_SPEEDRUN_RATIO = 8.0


def auto_total_batch_size(target_tokens: int, reference_tokens: float) -> int:
    """Generation 2's automatic total batch in tokens: 2^round(log2(2^19 · (D/D_ref)^0.383))."""
    predicted = GEN2_REFERENCE_BATCH_SIZE * (target_tokens / reference_tokens) ** GEN2_BATCH_SIZE_EXPONENT
    return 2 ** round(math.log2(predicted))


def gen2_reference_shape(shape: ModelShape) -> ModelShape:
    """The d12 reference of a generation-2 shape: nanochat's width rule, this shape's vocabulary and rows."""
    reference = ModelShape.from_depth(
        GEN2_REFERENCE_DEPTH, vocab_size=shape.vocab_size, sequence_len=shape.sequence_len, generation=2
    )
    return dataclasses.replace(reference, window_pattern=shape.window_pattern)


def gen2_horizon(
    shape: ModelShape,
    *,
    target_param_data_ratio: float = GEN2_RATIO,
    total_batch_size: int = -1,
    max_steps: int = -1,
) -> Horizon:
    """The horizon of a generation-2 run: ratio × scaling parameters, the automatic batch unless one is given."""
    if not (isinstance(target_param_data_ratio, (int, float)) and math.isfinite(target_param_data_ratio)):
        raise UserInputError(f"target_param_data_ratio must be a finite number, got {target_param_data_ratio!r}")
    if target_param_data_ratio <= 0:
        raise UserInputError(f"target_param_data_ratio must be positive, got {target_param_data_ratio!r}")
    counts = param_counts(shape)
    target_tokens = int(target_param_data_ratio * counts.scaling)
    reference_tokens = target_param_data_ratio * param_counts(gen2_reference_shape(shape)).scaling
    if total_batch_size == -1:
        total_batch_size = auto_total_batch_size(target_tokens, reference_tokens)
    _require_positive_int("total_batch_size", total_batch_size)
    if max_steps > 0:
        steps, source, target = int(max_steps), "max_steps", int(max_steps)
    else:
        steps, source, target = target_tokens // total_batch_size, "target_param_data_ratio", target_param_data_ratio
        if steps == 0:
            raise UserInputError(
                f"the horizon gives 0 updates: ratio {target_param_data_ratio:g} x {counts.scaling:,} scaling "
                f"parameters = {target_tokens:,} tokens, less than one batch of {total_batch_size:,}"
            )
    return Horizon(
        counts.total, total_batch_size, steps, source, target, flops_per_token(shape), scaling_params=counts.scaling
    )
