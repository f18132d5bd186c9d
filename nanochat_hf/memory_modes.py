"""Memory modes for pretraining: named presets that expand to explicit, individually settable knobs.

The recipe config says `memory_mode: auto | full | 24gb | 12gb | 8gb`; the planner
(`nanochat_hf/planner.py`) predicts what each mode costs and `auto` picks the least-offloading mode
that fits the GPU. The offload engine reads the same `MemoryKnobs`, so plan and run cannot drift apart.

The modes are the conclusions of hardware-and-budget.md §4.5 for d32 at micro-batch 1 x 2048:

    full  - spec mode A, nanochat generation 1 as it is: fp32 weights (wte in bf16, as nanochat casts
            it on CUDA), fp32 gradients, fp32 Muon momentum and AdamW state, eager autocast keeping
            bf16 copies of the fp32 weights. d32 needs ~25-30 GiB: a 32 GB card or larger.
    24gb  - spec mode J: fp32 weights and gradients, 8-bit blockwise Muon momentum and bitsandbytes
            8-bit AdamW, all on the GPU, no cached bf16 weight copies. d32: 16 GiB static, fits
            24 GiB cards (RTX 3090 / 4090) without checkpointing.
    12gb  - spec mode H (the recommended 12 GiB mode): bf16 weights on the GPU; each layer's gradients
            streamed to pinned CPU memory during backward and accumulated in fp32 there; fp32 master
            weights and all optimizer state in CPU RAM (Muon's Newton-Schulz still runs on the GPU).
            d32: 4.2 GiB static, ~8-9.5 GiB in all, no activation checkpointing.
    8gb   - mode H plus per-block activation checkpointing (d32: ~5.2 GiB).

Two quality rules from the spec decide which knob combinations are allowed at all (`MemoryKnobs`
refuses the others): gradients accumulated over hundreds of micro-steps must be summed in fp32
(bf16 sums drop the small contributions), and bf16 weights need an fp32 master copy (an update
smaller than ~2^-8 of a weight is lost in bf16). `full` keeps nanochat's own bf16 `wte` (and its bf16
gradient and Adam moments), which is how the reference d32 was trained.
"""

import dataclasses
from dataclasses import dataclass

from nanochat_hf.errors import UserInputError


# Least to most offloading; `auto` takes the first that fits.
MODE_ORDER = ("full", "24gb", "12gb", "8gb")
MEMORY_MODE_CHOICES = ("auto",) + MODE_ORDER

DTYPE_BYTES = {"float32": 4, "bfloat16": 2}

# 8-bit optimizer state layout, shared with the engine: bitsandbytes' blockwise quantisation keeps one
# uint8 per value plus one fp32 absmax per block of 256 values, and a 256-entry fp32 code book shared
# by all tensors; tensors under 4,096 values stay in fp32 (bitsandbytes' `min_8bit_size`, spec §4.1).
QUANT_BLOCK_SIZE = 256
MIN_8BIT_NUMEL = 4096
QUANT_CODE_BYTES = 256 * 4


@dataclass(frozen=True)
class MemoryKnobs:
    """Where each piece of training state lives and in which precision.

    weights_dtype: dtype of the matmul weights (block matrices, lm_head) on the GPU.
    embedding_dtype: dtype of `wte` on the GPU.
    master_weights: "gpu" = the GPU weights are the master copy (must then be fp32, except nanochat's
        own bf16 `wte`); "cpu" = an fp32 master copy of every parameter in CPU RAM.
    grad_accumulation: "gpu" = gradients accumulate in `param.grad` on the GPU (in the weights'
        dtype, so only with fp32 weights); "cpu" = each layer's bf16 gradients are copied to pinned CPU
        memory as soon as backward produces them and summed into fp32 accumulators there.
    grad_bucket_layers: with "cpu" accumulation, how many layers' gradients may sit on the GPU at once
        (one being copied out while the next is produced).
    optimizer_location: "gpu" or "cpu" (with the master weights; Newton-Schulz runs on the GPU anyway).
    muon_momentum: "full" (fp32, one buffer per block matrix) or "8bit" (blockwise-quantised).
    adamw_state: for wte and lm_head: "full" (torch.optim.AdamW: m and v in the updated parameter's
        dtype) or "8bit" (bitsandbytes AdamW8bit).
    paged_optimizer: bitsandbytes paged state (unified memory that can spill to CPU RAM). The planner
        still counts it on the GPU: paging is a safety valve, not a plan.
    activation_checkpointing: "none" or "block" (recompute each block's forward during backward).
    chunked_loss: soft-capped cross entropy over chunks of `loss_chunk_tokens` tokens, so the fp32
        sequence x vocab logits are never whole.
    weight_cast_copies: eager autocast caches the bf16 cast of every fp32 matmul weight for the whole
        forward/backward (+2 bytes per parameter). False means the engine re-casts instead (torch.compile
        does; the spec's 24 GiB figure assumes it).
    micro_batch: sequences per micro-step per GPU; None lets the planner choose the largest that fits.
    """

    weights_dtype: str = "float32"
    embedding_dtype: str = "float32"
    master_weights: str = "gpu"
    grad_accumulation: str = "gpu"
    grad_bucket_layers: int = 2
    optimizer_location: str = "gpu"
    muon_momentum: str = "full"
    adamw_state: str = "full"
    paged_optimizer: bool = False
    activation_checkpointing: str = "none"
    chunked_loss: bool = True
    loss_chunk_tokens: int = 256
    weight_cast_copies: bool = False
    micro_batch: int | None = None

    def __post_init__(self):
        choices = {
            "weights_dtype": tuple(DTYPE_BYTES),
            "embedding_dtype": tuple(DTYPE_BYTES),
            "master_weights": ("gpu", "cpu"),
            "grad_accumulation": ("gpu", "cpu"),
            "optimizer_location": ("gpu", "cpu"),
            "muon_momentum": ("full", "8bit"),
            "adamw_state": ("full", "8bit"),
            "activation_checkpointing": ("none", "block"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UserInputError(f"memory knob `{name}` must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("grad_bucket_layers", "loss_chunk_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserInputError(f"memory knob `{name}` must be a positive integer, got {value!r}")
        if self.micro_batch is not None and (
            not isinstance(self.micro_batch, int) or isinstance(self.micro_batch, bool) or self.micro_batch < 1
        ):
            raise UserInputError(
                f"memory knob `micro_batch` must be a positive integer or null, got {self.micro_batch!r}"
            )
        # The quality rules (hardware-and-budget.md §4.5).
        if self.weights_dtype == "bfloat16" and self.master_weights != "cpu":
            raise UserInputError(
                "memory knobs: bf16 weights need an fp32 master copy (updates smaller than ~2^-8 of a weight "
                "are lost in bf16); set `master_weights: cpu` or `weights_dtype: float32`"
            )
        if self.weights_dtype == "bfloat16" and self.grad_accumulation != "cpu":
            raise UserInputError(
                "memory knobs: with bf16 weights, gradients accumulated on the GPU would be summed in bf16, "
                "which drops small contributions over hundreds of micro-steps; set `grad_accumulation: cpu` "
                "(fp32 accumulators in CPU RAM)"
            )
        if self.master_weights == "cpu" and self.weights_dtype != "bfloat16":
            raise UserInputError(
                "memory knobs: `master_weights: cpu` only makes sense with `weights_dtype: bfloat16` "
                "(fp32 GPU weights are their own master)"
            )
        if (self.optimizer_location == "cpu") != (self.master_weights == "cpu"):
            raise UserInputError(
                "memory knobs: the optimizer state lives with the master weights; set `optimizer_location` "
                "and `master_weights` to the same place"
            )
        if self.grad_accumulation == "cpu" and self.master_weights != "cpu":
            raise UserInputError(
                "memory knobs: `grad_accumulation: cpu` needs `master_weights: cpu` (the optimizer steps on "
                "the CPU copies)"
            )

    @property
    def offloads(self) -> bool:
        return self.master_weights == "cpu"

    def describe(self) -> str:
        """One readable line per knob group, for plan output and logs."""
        if self.offloads:
            weights = f"weights {_short(self.weights_dtype)} on the GPU, fp32 master copy in CPU RAM"
            grads = (
                f"gradients streamed layer by layer ({self.grad_bucket_layers}-layer bucket) to pinned CPU RAM "
                "and summed in fp32 there"
            )
        else:
            weights = f"weights {_short(self.weights_dtype)} (wte {_short(self.embedding_dtype)}) on the GPU"
            grads = "gradients accumulated on the GPU in the weights' dtype"
        state = (
            f"optimizer state on the {self.optimizer_location.upper()}: Muon momentum {self.muon_momentum}, "
            f"AdamW (wte, lm_head) {self.adamw_state}" + (", paged" if self.paged_optimizer else "")
        )
        loss = (
            f"chunked loss ({self.loss_chunk_tokens} tokens per chunk)" if self.chunked_loss else "whole-sequence loss"
        )
        extras = [f"activation checkpointing: {self.activation_checkpointing}", loss]
        if self.weight_cast_copies:
            extras.append("autocast keeps bf16 weight copies")
        return "; ".join([weights, grads, state, ", ".join(extras)])


def _short(dtype: str) -> str:
    return {"float32": "fp32", "bfloat16": "bf16"}[dtype]


MEMORY_MODES: dict[str, MemoryKnobs] = {
    "full": MemoryKnobs(embedding_dtype="bfloat16", weight_cast_copies=True),
    "24gb": MemoryKnobs(muon_momentum="8bit", adamw_state="8bit"),
    "12gb": MemoryKnobs(
        weights_dtype="bfloat16",
        embedding_dtype="bfloat16",
        master_weights="cpu",
        grad_accumulation="cpu",
        optimizer_location="cpu",
    ),
    "8gb": MemoryKnobs(
        weights_dtype="bfloat16",
        embedding_dtype="bfloat16",
        master_weights="cpu",
        grad_accumulation="cpu",
        optimizer_location="cpu",
        activation_checkpointing="block",
    ),
}

KNOB_NAMES = tuple(field.name for field in dataclasses.fields(MemoryKnobs))


def knobs_for_mode(mode: str, **overrides) -> MemoryKnobs:
    """The knobs of a named mode (not `auto`: that needs the planner), with some of them overridden."""
    if mode not in MEMORY_MODES:
        raise UserInputError(f"unknown memory mode {mode!r}; expected one of {', '.join(MEMORY_MODE_CHOICES)}")
    unknown = sorted(set(overrides) - set(KNOB_NAMES))
    if unknown:
        raise UserInputError(f"unknown memory knob(s) {', '.join(unknown)}; known knobs: {', '.join(KNOB_NAMES)}")
    return dataclasses.replace(MEMORY_MODES[mode], **overrides)


def parse_knob_assignment(text: str) -> tuple[str, object]:
    """`name=value` from the command line, with the value converted to the knob's type."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or name not in KNOB_NAMES:
        raise UserInputError(f"--knob expects NAME=VALUE with NAME one of {', '.join(KNOB_NAMES)}; got {text!r}")
    default = getattr(MemoryKnobs(), name)
    if name == "micro_batch":
        if raw.lower() in ("none", "null", "auto", ""):
            return name, None
        default = 0
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise UserInputError(f"--knob {name} expects true or false, got {raw!r}")
        return name, raw.lower() in ("true", "1", "yes")
    if isinstance(default, int):
        try:
            return name, int(raw)
        except ValueError:
            raise UserInputError(f"--knob {name} expects an integer, got {raw!r}") from None
    return name, raw
