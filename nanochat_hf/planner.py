"""The planner: will a nanochat model fit a GPU, and what will pretraining it cost in days, kWh and money?

Every number comes from arithmetic on the model's shapes (`flops.py`), the GPU table (`hardware.py`) and
the memory-mode knobs (`memory_modes.py`), following hardware-and-budget.md:

- memory (§4): static state (weights, gradients, optimizer state; predicted to the byte, tested against
  real tensors), activations per block (§4.2: 26-38 bytes per element of the B x T x d residual
  stream, compiled .. eager), logits (§4.3), CUDA context 0.4 GiB and a 5 % allocator margin (§4.4);
- time (§3.1): total FLOPs / (MFU x peak), plus the recomputation of activation checkpointing and the
  optimizer step (Muon's Newton-Schulz on the GPU; for offloading modes also the PCIe copies and the
  CPU update, §4.6);
- energy (§3.2): hours x board power (an upper bound for the GPU alone), optionally plus the host.

`make_plan` returns a `Plan` (plain dataclasses, `to_dict()` for JSON); `render_plan` and
`render_gpu_table` turn plans into text; `render_readme` writes the README section
`docs/can_i_train_d32.md` (`python -m nanochat_hf.planner --readme`).
"""

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nanochat_hf.atomic import write_text_atomically
from nanochat_hf.errors import UserInputError
from nanochat_hf.flops import (
    TOTAL_BATCH_TOKENS,
    Horizon,
    ModelShape,
    ParamCounts,
    attention_flops_per_token,
    flops_per_token,
    newton_schulz_flops,
    param_counts,
    param_tensors,
    recompute_flops_per_token,
    training_horizon,
)
from nanochat_hf.hardware import GIB, GpuSpec, detect_gpu, get_gpu, known_gpu_keys, load_gpu_table
from nanochat_hf.memory_modes import (
    DTYPE_BYTES,
    MEMORY_MODE_CHOICES,
    MIN_8BIT_NUMEL,
    MODE_ORDER,
    QUANT_BLOCK_SIZE,
    QUANT_CODE_BYTES,
    MemoryKnobs,
    knobs_for_mode,
)


# Fixed overheads (hardware-and-budget.md §4.4): the CUDA context (~290-670 MB, plan 0.4 GiB; it is
# outside torch.cuda.max_memory_reserved) and >= 5 % of the card kept free for allocator fragmentation.
CUDA_CONTEXT_BYTES = int(0.4 * GIB)
ALLOCATOR_MARGIN = 0.05

# Activation bytes per element of the residual stream E = micro_batch x T x d, per block (§4.2): eager
# PyTorch saves 19 bf16 tensors' worth (x, normed x twice, q/k after rotary, SDPA's q/k/v/out, the
# attention output, the mid-block residual, 4d-wide relu and relu^2 outputs); Inductor recomputes the
# cheap pointwise ones and keeps ~13.
ACTIVATION_BYTES_EAGER = 38
ACTIVATION_BYTES_COMPILED = 26
# Per-block checkpointing keeps each block's bf16 input (2 bytes) and, while one block is recomputed,
# its activations plus the transient gradients of backward: the 4d-wide hidden (8) and the residual
# stream in and out (4) - the spec's "~100 MiB" for d32.
CHECKPOINT_INPUT_BYTES = 2
CHECKPOINT_TRANSIENT_GRAD_BYTES = 12

# Logits (§4.3), bytes per (token x vocab) element: bf16 lm_head output (2) + its fp32 upcast (4) + the
# fp32 soft-capped logits (4); the whole-sequence eager loss also keeps the fp32 log-softmax (4), the
# spec's 1.5-2 GiB for d32. A chunked loss holds one chunk at a time.
LOGITS_BYTES_CHUNKED = 10
LOGITS_BYTES_WHOLE = 14

# Offloading costs (§4.6): host DRAM bandwidth (dual-channel DDR4; DDR5 is ~2x faster), the CPU traffic
# of summing one micro-step's bf16 gradients into fp32 accumulators (read 2 + 4, write 4 bytes/param)
# and of the optimizer update on the CPU (~16 bytes/param: master, gradient, momentum/Adam state).
HOST_DRAM_GBS = 35.0
CPU_ACCUMULATE_BYTES_PER_PARAM = 10
CPU_UPDATE_BYTES_PER_PARAM = 16
# CPU RAM beyond the offloaded state: operating system, Python, data loader (an assumption).
HOST_RAM_OVERHEAD_GIB = 8
SYSTEM_RAM_SIZES_GIB = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

DEFAULT_GPU = "rtx4070"
DEFAULT_MFU = 0.4
DEFAULT_MFU_BAND = (0.3, 0.5)  # §2.3: planning bands 30 / 40 / 50 %
DEFAULT_PRICE_PER_KWH = 0.30
DEFAULT_CURRENCY = "USD"
DAYS_PER_MONTH = 30.44

# The seed document's claim this planner replaces (hardware-and-budget.md §0, §6).
SEED_CLAIM = "d32 on one RTX 4070 in 4-6 weeks via 3-4-bit quantization (QLoRA / NF4 / GPTQ)"

README_PATH = Path(__file__).resolve().parent.parent / "docs" / "can_i_train_d32.md"


# --------------------------------------------------------------------------------------------------
# Memory


def _gpu_dtype(group: str, knobs: MemoryKnobs) -> str:
    return knobs.embedding_dtype if group == "embedding" else knobs.weights_dtype


def _updated_dtype(group: str, knobs: MemoryKnobs) -> str:
    """dtype of the tensor the optimizer updates: the fp32 master when there is one, else the GPU weight."""
    return "float32" if knobs.master_weights == "cpu" else _gpu_dtype(group, knobs)


def _quantized_bytes(numel: int) -> int:
    """One blockwise-quantised state tensor: uint8 values + one fp32 absmax per block."""
    return numel + 4 * math.ceil(numel / QUANT_BLOCK_SIZE)


def muon_state_bytes(shape: ModelShape, knobs: MemoryKnobs) -> int:
    """Muon's momentum: one buffer per block matrix, fp32 (as the grad of the fp32 master) or 8-bit."""
    total, any_quantized = 0, False
    for tensor in param_tensors(shape):
        if tensor.group != "matrix":
            continue
        if knobs.muon_momentum == "8bit" and tensor.numel >= MIN_8BIT_NUMEL:
            total += _quantized_bytes(tensor.numel)
            any_quantized = True
        else:
            total += tensor.numel * DTYPE_BYTES[_updated_dtype(tensor.group, knobs)]
    return total + (QUANT_CODE_BYTES if any_quantized else 0)


def adamw_state_bytes(shape: ModelShape, knobs: MemoryKnobs) -> int:
    """AdamW state of wte and lm_head.

    "full" is torch.optim.AdamW's layout: exp_avg and exp_avg_sq in the updated parameter's dtype plus a
    4-byte `step` tensor. "8bit" is bitsandbytes AdamW8bit: two quantised states per tensor of >= 4,096
    values (fp32 below that), two code books shared by the whole optimizer, `step` a Python int.
    """
    total, any_quantized = 0, False
    for tensor in param_tensors(shape):
        if tensor.group == "matrix":
            continue
        if knobs.adamw_state == "full":
            total += 2 * tensor.numel * DTYPE_BYTES[_updated_dtype(tensor.group, knobs)] + 4
        elif tensor.numel >= MIN_8BIT_NUMEL:
            total += 2 * _quantized_bytes(tensor.numel)
            any_quantized = True
        else:
            total += 2 * tensor.numel * 4
    return total + (2 * QUANT_CODE_BYTES if any_quantized else 0)


@dataclass(frozen=True)
class StaticMemory:
    """Bytes of training state that do not depend on the micro-batch."""

    gpu_weights: int
    gpu_gradients: int
    gpu_optimizer_state: int
    gpu_weight_cast_copies: int  # bf16 copies of fp32 matmul weights cached by eager autocast
    cpu_master_weights: int
    cpu_gradients: int  # fp32 accumulators
    cpu_optimizer_state: int
    cpu_pinned_staging: int  # pinned buffers the GPU copies gradient buckets into

    @property
    def gpu_total(self) -> int:
        return self.gpu_weights + self.gpu_gradients + self.gpu_optimizer_state + self.gpu_weight_cast_copies

    @property
    def cpu_total(self) -> int:
        return self.cpu_master_weights + self.cpu_gradients + self.cpu_optimizer_state + self.cpu_pinned_staging


def static_memory(shape: ModelShape, knobs: MemoryKnobs) -> StaticMemory:
    tensors = param_tensors(shape)
    n_total = sum(t.numel for t in tensors)
    gpu_weights = sum(t.numel * DTYPE_BYTES[_gpu_dtype(t.group, knobs)] for t in tensors)
    optimizer = muon_state_bytes(shape, knobs) + adamw_state_bytes(shape, knobs)
    if knobs.grad_accumulation == "gpu":
        # Gradients live in param.grad, in the parameter's dtype, for the whole optimizer step.
        gpu_gradients, cpu_gradients, staging = gpu_weights, 0, 0
    else:
        # Only a bucket of `grad_bucket_layers` blocks is on the GPU at once, plus wte's and lm_head's
        # gradients (lm_head's appears first in backward, wte's last); the pinned CPU staging mirrors it.
        layer_bytes = sum(
            t.numel * DTYPE_BYTES[knobs.weights_dtype] for t in tensors if t.name.startswith("transformer.h.0.")
        )
        edge_bytes = sum(t.numel * DTYPE_BYTES[_gpu_dtype(t.group, knobs)] for t in tensors if t.group != "matrix")
        gpu_gradients = min(knobs.grad_bucket_layers, shape.n_layer) * layer_bytes + edge_bytes
        cpu_gradients, staging = 4 * n_total, gpu_gradients
    fp32_matmul_weights = sum(t.numel for t in tensors if t.group != "embedding" and knobs.weights_dtype == "float32")
    on_gpu = knobs.optimizer_location == "gpu"
    return StaticMemory(
        gpu_weights=gpu_weights,
        gpu_gradients=gpu_gradients,
        gpu_optimizer_state=optimizer if on_gpu else 0,
        gpu_weight_cast_copies=2 * fp32_matmul_weights if knobs.weight_cast_copies else 0,
        cpu_master_weights=4 * n_total if knobs.master_weights == "cpu" else 0,
        cpu_gradients=cpu_gradients,
        cpu_optimizer_state=0 if on_gpu else optimizer,
        cpu_pinned_staging=staging,
    )


def activation_bytes(shape: ModelShape, knobs: MemoryKnobs, micro_batch: int) -> tuple[int, int]:
    """(compiled, eager) bytes of saved activations at the start of backward, for one micro-batch."""
    elements = micro_batch * shape.sequence_len * shape.n_embd
    if knobs.activation_checkpointing == "none":
        return (
            shape.n_layer * ACTIVATION_BYTES_COMPILED * elements,
            shape.n_layer * ACTIVATION_BYTES_EAGER * elements,
        )
    saved = shape.n_layer * CHECKPOINT_INPUT_BYTES * elements + CHECKPOINT_TRANSIENT_GRAD_BYTES * elements
    return (saved + ACTIVATION_BYTES_COMPILED * elements, saved + ACTIVATION_BYTES_EAGER * elements)


def logits_bytes(shape: ModelShape, knobs: MemoryKnobs, micro_batch: int) -> int:
    tokens = micro_batch * shape.sequence_len
    if knobs.chunked_loss:
        return min(knobs.loss_chunk_tokens, tokens) * shape.vocab_size * LOGITS_BYTES_CHUNKED
    return tokens * shape.vocab_size * LOGITS_BYTES_WHOLE


def system_ram_gib(cpu_bytes: int) -> int:
    """The smallest common RAM size that holds the offloaded state plus the host's own needs."""
    needed = cpu_bytes / GIB + HOST_RAM_OVERHEAD_GIB
    return next((size for size in SYSTEM_RAM_SIZES_GIB if size >= needed), math.ceil(needed))


@dataclass
class MemoryPlan:
    """GPU memory of one mode at one micro-batch (bytes per GPU), and the CPU RAM the mode needs."""

    mode: str
    knobs: MemoryKnobs
    micro_batch: int
    grad_accum_steps: int
    static: StaticMemory
    activations_compiled: int
    activations_eager: int
    logits: int
    cuda_context: int
    margin: int
    capacity: int

    @property
    def total(self) -> int:
        """Planned peak, with the eager (larger) activation estimate."""
        return self.static.gpu_total + self.activations_eager + self.logits + self.cuda_context + self.margin

    @property
    def total_compiled(self) -> int:
        return self.static.gpu_total + self.activations_compiled + self.logits + self.cuda_context + self.margin

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    @property
    def system_ram_gib(self) -> int:
        return system_ram_gib(self.static.cpu_total)

    def to_dict(self) -> dict:
        static = dataclasses.asdict(self.static)
        return {
            "mode": self.mode,
            "knobs": dataclasses.asdict(self.knobs),
            "micro_batch": self.micro_batch,
            "grad_accum_steps": self.grad_accum_steps,
            "gpu_bytes": {
                "weights": static["gpu_weights"],
                "gradients": static["gpu_gradients"],
                "optimizer_state": static["gpu_optimizer_state"],
                "weight_cast_copies": static["gpu_weight_cast_copies"],
                "activations_compiled": self.activations_compiled,
                "activations_eager": self.activations_eager,
                "logits": self.logits,
                "cuda_context": self.cuda_context,
                "margin": self.margin,
                "total": self.total,
                "capacity": self.capacity,
            },
            "fits": self.fits,
            "cpu_bytes": {
                "master_weights": static["cpu_master_weights"],
                "gradients": static["cpu_gradients"],
                "optimizer_state": static["cpu_optimizer_state"],
                "pinned_staging": static["cpu_pinned_staging"],
                "total": self.static.cpu_total,
            },
            "system_ram_gib": self.system_ram_gib,
        }


def _micro_batch_candidates(shape: ModelShape, total_batch_tokens: int, num_gpus: int) -> list[int]:
    """Powers of two whose micro-steps tile the optimizer step exactly (gradient accumulation >= 1)."""
    candidates, micro_batch = [], 1
    while total_batch_tokens % (micro_batch * shape.sequence_len * num_gpus) == 0:
        candidates.append(micro_batch)
        micro_batch *= 2
    if not candidates:
        raise UserInputError(
            f"total batch of {total_batch_tokens} tokens is not a multiple of sequence_len {shape.sequence_len} x "
            f"{num_gpus} GPU(s)"
        )
    return candidates


def plan_memory(
    shape: ModelShape,
    gpu: GpuSpec,
    mode: str,
    knobs: MemoryKnobs,
    total_batch_tokens: int = TOTAL_BATCH_TOKENS,
) -> MemoryPlan:
    """The memory plan of one mode: at `knobs.micro_batch` if set, else the largest micro-batch that fits."""
    from nanochat_hf.training_plan import gradient_accumulation_steps

    static = static_memory(shape, knobs)

    def at(micro_batch: int) -> MemoryPlan:
        compiled, eager = activation_bytes(shape, knobs, micro_batch)
        return MemoryPlan(
            mode=mode,
            knobs=knobs,
            micro_batch=micro_batch,
            grad_accum_steps=gradient_accumulation_steps(
                total_batch_tokens, micro_batch, shape.sequence_len, gpu.num_gpus
            ),
            static=static,
            activations_compiled=compiled,
            activations_eager=eager,
            logits=logits_bytes(shape, knobs, micro_batch),
            cuda_context=CUDA_CONTEXT_BYTES,
            margin=int(ALLOCATOR_MARGIN * gpu.memory_bytes),
            capacity=gpu.memory_bytes,
        )

    if knobs.micro_batch is not None:
        return at(knobs.micro_batch)
    best = at(1)
    for micro_batch in _micro_batch_candidates(shape, total_batch_tokens, gpu.num_gpus)[1:]:
        candidate = at(micro_batch)
        if not candidate.fits:
            break
        best = candidate
    return best


# --------------------------------------------------------------------------------------------------
# Time, energy, money


@dataclass
class TimeEstimate:
    """Wall time of the whole run at one MFU point.

    `mfu` is the fraction of the BF16 peak the GPU sustains on the forward/backward work, as nanochat
    reports MFU for a run without recomputation. With activation checkpointing the GPU also redoes every
    block's forward, so the model FLOPs utilisation drops to `model_mfu`. The optimizer step (Newton-Schulz
    on the GPU; for offloading modes also the PCIe copies and the CPU update) is added on top.
    """

    mfu: float
    model_mfu: float
    micro_step_seconds: float
    optimizer_step_seconds: float  # optimizer + offload work that does not overlap with compute
    step_seconds: float
    overhead_fraction: float  # optimizer_step_seconds / forward-backward time of one step
    compute_hours: float  # total FLOPs / (mfu x peak): the spec's "days" tables
    hours: float
    energy_kwh: float
    cost: float

    @property
    def days(self) -> float:
        return self.hours / 24

    @property
    def months(self) -> float:
        return self.days / DAYS_PER_MONTH

    @property
    def compute_days(self) -> float:
        return self.compute_hours / 24

    def to_dict(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "days": self.days,
            "months": self.months,
            "compute_days": self.compute_days,
        }


def estimate_time(
    shape: ModelShape,
    gpu: GpuSpec,
    memory: MemoryPlan,
    horizon: Horizon,
    mfu: float,
    *,
    price_per_kwh: float = DEFAULT_PRICE_PER_KWH,
    host_power_w: float = 0.0,
) -> TimeEstimate:
    knobs = memory.knobs
    peak = mfu * gpu.peak_bf16_flops  # per GPU
    model_flops = flops_per_token(shape)
    recompute = recompute_flops_per_token(shape) if knobs.activation_checkpointing == "block" else 0
    micro_step_tokens = memory.micro_batch * shape.sequence_len
    micro_step_seconds = micro_step_tokens * (model_flops + recompute) / peak
    forward_backward_seconds = memory.grad_accum_steps * micro_step_seconds

    # Newton-Schulz: bf16 matmuls on the GPU; nanochat spreads the matrices over the GPUs of a node.
    optimizer_seconds = newton_schulz_flops(shape) / (peak * gpu.num_gpus)
    if knobs.offloads:
        counts = param_counts(shape)
        link = gpu.host_link_gbs * 1e9
        dram = HOST_DRAM_GBS * 1e9
        # Per micro-step, the bf16 gradients go to the host and are summed there in CPU threads while
        # the GPU computes; only what does not fit under the micro-step's compute time is added.
        grad_copy_seconds = counts.total * DTYPE_BYTES[knobs.weights_dtype] / link
        accumulate_seconds = counts.total * CPU_ACCUMULATE_BYTES_PER_PARAM / dram
        exposed = max(0.0, max(grad_copy_seconds, accumulate_seconds) - micro_step_seconds)
        # Per optimizer step: Nesterov-updated bf16 matrices to the GPU and the orthogonalised ones back,
        # the CPU update of master and state, then the new bf16 weights to the GPU.
        step_transfer_bytes = 2 * 2 * counts.blocks + counts.total * DTYPE_BYTES[knobs.weights_dtype]
        optimizer_seconds += (
            memory.grad_accum_steps * exposed
            + step_transfer_bytes / link
            + counts.total * CPU_UPDATE_BYTES_PER_PARAM / dram
        )
    step_seconds = forward_backward_seconds + optimizer_seconds
    hours = horizon.iterations * step_seconds / 3600
    energy_kwh = hours * (gpu.total_board_power_w + host_power_w) / 1000
    return TimeEstimate(
        mfu=mfu,
        model_mfu=mfu * model_flops / (model_flops + recompute),
        micro_step_seconds=micro_step_seconds,
        optimizer_step_seconds=optimizer_seconds,
        step_seconds=step_seconds,
        overhead_fraction=optimizer_seconds / forward_backward_seconds,
        compute_hours=horizon.total_flops / (mfu * gpu.peak_bf16_flops * gpu.num_gpus) / 3600,
        hours=hours,
        energy_kwh=energy_kwh,
        cost=energy_kwh * price_per_kwh,
    )


# --------------------------------------------------------------------------------------------------
# The plan


@dataclass
class Plan:
    depth: int
    shape: ModelShape
    gpu: GpuSpec
    params: ParamCounts
    flops_per_token: int
    attention_flops_per_token: int
    horizon: Horizon
    horizon_source: str
    requested_mode: str
    memory: MemoryPlan  # the chosen mode (for `auto`, the least offloading one that fits)
    modes: dict[str, MemoryPlan]  # every named mode, for comparison
    times: list[TimeEstimate]  # over the MFU band, ascending MFU
    chosen_mfu: float
    price_per_kwh: float
    currency: str
    host_power_w: float
    suggestion: str | None = None  # what to do when the chosen mode does not fit
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.memory.fits

    @property
    def chosen_time(self) -> TimeEstimate:
        return next(t for t in self.times if t.mfu == self.chosen_mfu)

    def floor_days(self, fp8: bool = False) -> float | None:
        """Days at 100 % of the (BF16 or FP8) peak: no real run can be faster."""
        tflops = self.gpu.fp8_tflops if fp8 else self.gpu.bf16_tflops
        if tflops is None:
            return None
        return self.horizon.total_flops / (tflops * 1e12 * self.gpu.num_gpus) / 86400

    def to_dict(self) -> dict:
        gpu = dataclasses.asdict(self.gpu)
        gpu["compute_capability"] = ".".join(map(str, self.gpu.compute_capability))
        return {
            "depth": self.depth,
            "model": dataclasses.asdict(self.shape),
            "gpu": gpu,
            "params": {**dataclasses.asdict(self.params), "matmul": self.params.matmul},
            "flops_per_token": self.flops_per_token,
            "attention_flops_per_token": self.attention_flops_per_token,
            "horizon": {**dataclasses.asdict(self.horizon), "source": self.horizon_source},
            "requested_mode": self.requested_mode,
            "memory": self.memory.to_dict(),
            "modes": {
                name: {
                    "fits": plan.fits,
                    "micro_batch": plan.micro_batch,
                    "gpu_total_bytes": plan.total,
                    "cpu_total_bytes": plan.static.cpu_total,
                }
                for name, plan in self.modes.items()
            },
            "fits": self.fits,
            "suggestion": self.suggestion,
            "times": [t.to_dict() for t in self.times],
            "chosen_mfu": self.chosen_mfu,
            "floor_days_bf16": self.floor_days(),
            "floor_days_fp8": self.floor_days(fp8=True),
            "price_per_kwh": self.price_per_kwh,
            "currency": self.currency,
            "host_power_w": self.host_power_w,
            "notes": self.notes,
        }


def _resolve_gpu(gpu) -> tuple[GpuSpec, str | None]:
    """A table row from a key or name; None means the detected GPU (the RTX 4070 on a machine without CUDA)."""
    if isinstance(gpu, GpuSpec):
        return gpu, None
    if gpu:
        return get_gpu(gpu), None
    detected = detect_gpu()
    if detected is not None:
        return detected, f"planning for the detected GPU ({detected.name})"
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        raise UserInputError(
            f"the detected GPU {props.name!r} ({props.total_memory / GIB:.1f} GiB) is not in "
            f"nanochat_hf/data/gpus.csv; pass --gpu with one of: {', '.join(known_gpu_keys())}"
        )
    return get_gpu(DEFAULT_GPU), f"no CUDA GPU detected; planning for {DEFAULT_GPU} (use --gpu to choose)"


def _mode_plans(shape, gpu, overrides, total_batch_tokens, requested: str = "auto") -> dict[str, MemoryPlan]:
    """Every named mode with the overrides applied. A mode the overrides make invalid (e.g. bf16 weights
    for `full`) is left out of the comparison, unless it is the requested one: then its error is the answer."""
    plans, first_error = {}, None
    for mode in MODE_ORDER:
        try:
            knobs = knobs_for_mode(mode, **overrides)
        except UserInputError as err:
            if mode == requested:
                raise
            first_error = first_error or err
            continue
        plans[mode] = plan_memory(shape, gpu, mode, knobs, total_batch_tokens)
    if not plans:
        raise first_error
    return plans


def largest_depth_that_fits(
    gpu: GpuSpec, below: int, *, vocab_size: int, sequence_len: int, total_batch_tokens: int = TOTAL_BATCH_TOKENS
) -> tuple[int, str] | None:
    """(depth, least-offloading mode) of the deepest model under `below` that fits `gpu` at micro-batch 1."""
    for depth in range(below - 1, 0, -1):
        shape = ModelShape.from_depth(depth, vocab_size, sequence_len)
        for mode, plan in _mode_plans(shape, gpu, {"micro_batch": 1}, total_batch_tokens).items():
            if plan.fits:
                return depth, mode
    return None


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB"


def not_fit_message(plan: "Plan") -> str:
    m = plan.memory
    parts = (
        f"weights {_gib(m.static.gpu_weights)}, gradients {_gib(m.static.gpu_gradients)}, "
        f"optimizer state {_gib(m.static.gpu_optimizer_state)}"
        + (f", bf16 weight copies {_gib(m.static.gpu_weight_cast_copies)}" if m.static.gpu_weight_cast_copies else "")
        + f", activations {_gib(m.activations_eager)}, logits {_gib(m.logits)}, CUDA context {_gib(m.cuda_context)}, "
        f"margin {_gib(m.margin)}"
    )
    return (
        f"memory mode '{m.mode}' does not fit d{plan.depth} on {plan.gpu.name}: it needs {_gib(m.total)} per GPU "
        f"at micro-batch {m.micro_batch} ({parts}) but the card has {_gib(m.capacity)}. {plan.suggestion}"
    )


def require_fit(plan: "Plan") -> None:
    """Raise a UserInputError naming the numbers and the nearest mode that fits, before training starts."""
    if not plan.fits:
        raise UserInputError(not_fit_message(plan))


def make_plan(
    depth: int = 32,
    gpu: GpuSpec | str | None = DEFAULT_GPU,
    *,
    tokens: float | None = None,
    ratio: float | None = None,
    memory_mode: str = "auto",
    knob_overrides: dict | None = None,
    mfu: float = DEFAULT_MFU,
    mfu_band: tuple[float, float] = DEFAULT_MFU_BAND,
    price_per_kwh: float = DEFAULT_PRICE_PER_KWH,
    currency: str = DEFAULT_CURRENCY,
    host_power_w: float = 0.0,
    total_batch_tokens: int = TOTAL_BATCH_TOKENS,
    vocab_size: int = 65536,
    sequence_len: int = 2048,
    shape: ModelShape | None = None,
) -> Plan:
    """Plan pretraining of a depth-`depth` nanochat (or of `shape`) on `gpu` (None: the detected one)."""
    if memory_mode not in MEMORY_MODE_CHOICES:
        raise UserInputError(f"unknown memory mode {memory_mode!r}; expected one of {', '.join(MEMORY_MODE_CHOICES)}")
    for name, value in (("mfu", mfu), *((f"mfu band {i}", v) for i, v in enumerate(mfu_band))):
        if not 0 < value <= 1:
            raise UserInputError(f"{name} must be a fraction in (0, 1], got {value!r}")
    if price_per_kwh < 0 or host_power_w < 0:
        raise UserInputError("price per kWh and host power must not be negative")
    if tokens is not None and ratio is not None:
        raise UserInputError("give either --tokens or --ratio, not both")
    gpu, gpu_note = _resolve_gpu(gpu)
    if shape is None:
        try:
            shape = ModelShape.from_depth(depth, vocab_size, sequence_len)
        except ValueError as err:
            raise UserInputError(f"--depth: {err}") from None
    overrides = dict(knob_overrides or {})
    horizon = training_horizon(shape, ratio=ratio, tokens=tokens, total_batch_tokens=total_batch_tokens)
    horizon_source = (
        f"{tokens:.4g} tokens" if tokens is not None else f"ratio {20 if ratio is None else ratio:g} x parameters"
    )

    modes = _mode_plans(shape, gpu, overrides, total_batch_tokens, memory_mode)
    notes = [gpu_note] if gpu_note else []
    suggestion = None
    if memory_mode == "auto":
        chosen = next((plan for plan in modes.values() if plan.fits), list(modes.values())[-1])
        if chosen.fits:
            notes.append(f"memory mode auto -> '{chosen.mode}', the least offloading mode that fits")
    else:
        chosen = modes[memory_mode]
        faster = next((plan for plan in modes.values() if plan.fits), None)
        if chosen.fits and faster is not None and MODE_ORDER.index(faster.mode) < MODE_ORDER.index(memory_mode):
            notes.append(f"the less offloading mode '{faster.mode}' also fits this GPU")
    if not chosen.fits:
        start = 0 if memory_mode == "auto" else MODE_ORDER.index(memory_mode) + 1
        nearer = [modes[m] for m in MODE_ORDER[start:] + MODE_ORDER[:start] if m in modes and modes[m].fits]
        if nearer:
            alt = nearer[0]
            suggestion = (
                f"Use --memory-mode {alt.mode} instead: it needs {_gib(alt.total)} at micro-batch {alt.micro_batch}."
            )
        else:
            smaller = largest_depth_that_fits(
                gpu,
                shape.n_layer,
                vocab_size=shape.vocab_size,
                sequence_len=shape.sequence_len,
                total_batch_tokens=total_batch_tokens,
            )
            if smaller:
                suggestion = (
                    f"No memory mode fits this model on this GPU; the deepest model that fits is "
                    f"d{smaller[0]} (memory mode '{smaller[1]}')."
                )
            else:
                suggestion = "No memory mode fits even a one-layer model on this GPU."
        if overrides.get("micro_batch", 1) > 1:
            suggestion += " Or let the planner choose the micro-batch (drop the micro_batch override)."

    if not shape.gen1_buildable:
        notes.append(
            f"generation 1 cannot build d{shape.n_layer} ({64 * shape.n_layer} is not divisible by "
            f"{math.ceil(64 * shape.n_layer / 128)} heads); planned with the 2026 width rule: width {shape.n_embd}, "
            f"{shape.n_head} heads"
        )
    knobs = chosen.knobs
    if knobs.activation_checkpointing == "block":
        extra = recompute_flops_per_token(shape) / flops_per_token(shape)
        notes.append(
            f"activation checkpointing recomputes every block's forward (+{extra:.0%} GPU FLOPs): the model FLOPs "
            f"utilisation is {1 / (1 + extra):.2f} x the MFU band"
        )
    if knobs.offloads:
        notes.append(
            "offloading assumes the per-micro-step gradient copies and CPU fp32 sums overlap with the GPU's "
            f"compute (only the excess is counted), host RAM at {HOST_DRAM_GBS:g} GB/s and "
            f"PCIe {gpu.pcie} at {gpu.host_link_gbs:g} GB/s per direction; to be measured on the GPU"
        )
    if chosen.mode == "full":
        notes.append("mode 'full' keeps nanochat's own bf16 wte (bf16 gradient and Adam moments for it)")
    if gpu.num_gpus > 1:
        notes.append(
            f"{gpu.num_gpus} GPUs: memory is per GPU for a full replica on each (nanochat shards the optimizer "
            "state, so this is an upper bound); time uses all GPUs' peak"
        )
    if gpu.supports_fp8:
        notes.append(
            "FP8 matmuls (torchao float8, compute capability >= 8.9) are the only low-bit speed-up for "
            "pretraining: nanochat measured 1.17x tok/s on H100 (about 1.05x at equal quality); untested on this card"
        )
    else:
        notes.append(f"no FP8 tensor cores (compute capability {'.'.join(map(str, gpu.compute_capability))} < 8.9)")

    mfu_points = sorted({mfu_band[0], mfu, mfu_band[1]})
    times = [
        estimate_time(shape, gpu, chosen, horizon, point, price_per_kwh=price_per_kwh, host_power_w=host_power_w)
        for point in mfu_points
    ]
    counts = param_counts(shape)
    return Plan(
        depth=shape.n_layer,
        shape=shape,
        gpu=gpu,
        params=counts,
        flops_per_token=flops_per_token(shape),
        attention_flops_per_token=attention_flops_per_token(shape),
        horizon=horizon,
        horizon_source=horizon_source,
        requested_mode=memory_mode,
        memory=chosen,
        modes=modes,
        times=times,
        chosen_mfu=mfu,
        price_per_kwh=price_per_kwh,
        currency=currency,
        host_power_w=host_power_w,
        suggestion=suggestion,
        notes=notes,
    )


def plan_all_gpus(depth: int = 32, **kwargs) -> list[Plan]:
    """One plan per row of the GPU table, in table order."""
    return [make_plan(depth, gpu, **kwargs) for gpu in load_gpu_table()]


# --------------------------------------------------------------------------------------------------
# Text


def _fmt_days(days: float) -> str:
    if days < 2:
        return f"{days * 24:.1f} h"
    return f"{days:.0f} d" if days >= 10 else f"{days:.1f} d"


def _fmt_day_range(days: list[float]) -> str:
    """Several durations in one unit: days, or hours when the shortest is under two days."""
    if min(days) < 2:
        return " / ".join(f"{d * 24:.0f}" for d in days) + " h"
    return " / ".join(f"{d:.0f}" if d >= 10 else f"{d:.1f}" for d in days)


def _fmt_months(days: float) -> str:
    months = days / DAYS_PER_MONTH
    if months >= 1:
        return f"{months:.1f} months"
    weeks = days / 7
    return f"{weeks:.1f} weeks" if weeks >= 1 else _fmt_days(days)


def _table(rows: list[list[str]], align: str) -> list[str]:
    """Plain text table; `align` has one 'l' or 'r' per column."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(w) if a == "l" else cell.rjust(w) for cell, w, a in zip(row, widths, align, strict=True)]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def render_plan(plan: Plan) -> str:
    s, p, g, m, h = plan.shape, plan.params, plan.gpu, plan.memory, plan.horizon
    gpu_desc = f"{g.name}" + (f" ({g.num_gpus} GPUs)" if g.num_gpus > 1 else "")
    out = [
        f"Plan: nanochat d{plan.depth} on {gpu_desc}: {g.memory_gib:g} GiB per GPU, "
        f"{g.bf16_tflops:g} TFLOP/s dense BF16 per GPU, {g.board_power_w:g} W per GPU",
        "",
        f"Model: width {s.n_embd}, {s.n_head} heads of {s.head_dim}, {s.n_layer} layers, vocab {s.vocab_size:,}, "
        f"sequence {s.sequence_len:,}",
        f"  parameters       {p.total:,} total = {p.matmul:,} matmul (blocks {p.blocks:,} + lm_head {p.lm_head:,}) "
        f"+ {p.embedding:,} embedding (wte)",
        f"  FLOPs per token  {plan.flops_per_token:,} ({plan.flops_per_token:.4e}) = 6 x {p.matmul:,} + attention "
        f"{plan.attention_flops_per_token:,}",
        f"  training         {h.iterations:,} steps x {h.total_batch_tokens:,} tokens = {h.tokens:,} tokens "
        f"({plan.horizon_source}; {h.tokens_per_param:.1f} tokens/parameter)",
        f"  total FLOPs      {h.total_flops:.4e}",
        "",
        f"Memory mode '{m.mode}'" + (" (auto)" if plan.requested_mode == "auto" else "") + f": {m.knobs.describe()}",
        f"  GPU memory per GPU at micro-batch {m.micro_batch} x {s.sequence_len:,} tokens:",
    ]
    rows = [
        ["component", "GiB"],
        ["weights", f"{m.static.gpu_weights / GIB:.2f}"],
        ["gradients", f"{m.static.gpu_gradients / GIB:.2f}"],
        ["optimizer state", f"{m.static.gpu_optimizer_state / GIB:.2f}"],
        ["bf16 weight copies (autocast)", f"{m.static.gpu_weight_cast_copies / GIB:.2f}"],
        ["activations (compiled .. eager)", f"{m.activations_compiled / GIB:.2f} .. {m.activations_eager / GIB:.2f}"],
        ["logits / loss", f"{m.logits / GIB:.2f}"],
        ["CUDA context", f"{m.cuda_context / GIB:.2f}"],
        [f"allocator margin ({ALLOCATOR_MARGIN:.0%})", f"{m.margin / GIB:.2f}"],
        ["total (eager)", f"{m.total / GIB:.2f}"],
    ]
    out += ["    " + line for line in _table(rows, "lr")]
    verdict = (
        f"fits: {m.total / GIB:.2f} of {m.capacity / GIB:.2f} GiB ({(m.capacity - m.total) / GIB:.2f} GiB spare)"
        if m.fits
        else f"DOES NOT FIT: {m.total / GIB:.2f} GiB needed, {m.capacity / GIB:.2f} GiB on the card"
    )
    out.append(f"  -> {verdict}")
    st = m.static
    if st.cpu_total:
        out.append(
            f"  CPU RAM: fp32 master {st.cpu_master_weights / GIB:.2f} + fp32 gradient sums {st.cpu_gradients / GIB:.2f}"
            f" + optimizer state {st.cpu_optimizer_state / GIB:.2f} + pinned staging {st.cpu_pinned_staging / GIB:.2f}"
            f" = {st.cpu_total / GIB:.2f} GiB -> system RAM >= {m.system_ram_gib} GiB"
        )
    else:
        out.append(f"  CPU RAM: nothing offloaded -> system RAM >= {m.system_ram_gib} GiB")
    out.append(
        f"  Batch: micro-batch {m.micro_batch} x {s.sequence_len:,} tokens x {g.num_gpus} GPU(s), "
        f"{m.grad_accum_steps} accumulation steps per optimizer step of {h.total_batch_tokens:,} tokens"
    )
    others = ", ".join(
        f"{name} {plan_.total / GIB:.1f} GiB {'fits' if plan_.fits else 'no'}" for name, plan_ in plan.modes.items()
    )
    out.append(f"  All modes (GiB at their micro-batch): {others}")
    if not m.fits:
        out.append(f"  {plan.suggestion}")

    out += [
        "",
        f"Time and energy (MFU band {plan.times[0].mfu:.0%}-{plan.times[-1].mfu:.0%}, chosen {plan.chosen_mfu:.0%}):",
    ]
    power = g.total_board_power_w + plan.host_power_w
    rows = [
        [
            "MFU",
            "model MFU",
            "micro-step",
            "optimizer step",
            "overhead",
            "days",
            "months",
            f"kWh @{power:g} W",
            f"{plan.currency} @{plan.price_per_kwh:g}/kWh",
        ]
    ]
    for t in plan.times:
        rows.append(
            [
                f"{t.mfu:.0%}" + (" *" if t.mfu == plan.chosen_mfu else ""),
                f"{t.model_mfu:.0%}",
                f"{t.micro_step_seconds:.2f} s",
                f"{t.optimizer_step_seconds:.1f} s",
                f"{t.overhead_fraction:.1%}",
                f"{t.days:,.1f}",
                f"{t.months:.1f}",
                f"{t.energy_kwh:,.0f}",
                f"{t.cost:,.0f}",
            ]
        )
    out += ["  " + line for line in _table(rows, "rrrrrrrrr")]
    floor = f"  Floor: {plan.floor_days():,.1f} days at 100 % of the BF16 peak"
    if plan.floor_days(fp8=True) is not None:
        floor += f", {plan.floor_days(fp8=True):,.1f} days at 100 % of the FP8 peak"
    out.append(floor + " (no run is faster).")
    out.append(
        "  Energy is hours x board power: an upper bound for the GPU alone"
        + (
            f", plus {plan.host_power_w:g} W for the host."
            if plan.host_power_w
            else "; a desktop host adds ~60-120 W (--host-watts)."
        )
    )
    if plan.notes:
        out += ["", "Notes:"] + [f"  - {note}" for note in plan.notes]
    return "\n".join(out) + "\n"


def gpu_table_rows(plans: list[Plan]) -> list[list[str]]:
    band = [t.mfu for t in plans[0].times]
    currency, price = plans[0].currency, plans[0].price_per_kwh
    header = [
        "GPU",
        "memory",
        "mode (auto)",
        "micro-batch x accum",
        "GPU GiB",
        "system RAM",
        "days @ " + " / ".join(f"{x:.0%}" for x in reversed(band)) + " MFU",
        f"at {plans[0].chosen_mfu:.0%}",
        f"kWh at {plans[0].chosen_mfu:.0%}",
        f"{currency} @{price:g}/kWh",
    ]
    rows = [header]
    for plan in plans:
        g, m, t = plan.gpu, plan.memory, plan.chosen_time
        name = g.name.replace("NVIDIA GeForce ", "").replace("NVIDIA ", "")
        memory = f"{g.memory_gib:g} GiB" + (f" x {g.num_gpus}" if g.num_gpus > 1 else "")
        if not m.fits:
            rows.append([name, memory, "none fits", "-", f"{m.total / GIB:.1f} (8gb)", "-", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                name,
                memory,
                m.mode,
                f"{m.micro_batch} x {m.grad_accum_steps}",
                f"{m.total / GIB:.1f}",
                f"{m.system_ram_gib} GiB",
                _fmt_day_range([x.days for x in reversed(plan.times)]),
                _fmt_months(t.days),
                f"{t.energy_kwh:,.0f}",
                f"{t.cost:,.0f}",
            ]
        )
    return rows


def render_gpu_table(plans: list[Plan]) -> str:
    first = plans[0]
    out = [
        f"d{first.depth}: {first.params.total:,} parameters, {first.horizon.tokens:,} tokens, "
        f"{first.horizon.total_flops:.3e} FLOPs, on each GPU of the table (memory mode: {first.requested_mode})",
        "",
    ]
    out += _table(gpu_table_rows(plans), "llllrrrrrr")
    out += [
        "",
        "Days include the optimizer step and, for offloading modes, the exposed offload time; energy is GPU board",
        "power only. 'none fits': even the 8gb mode needs more than the card has (its need in GiB is shown).",
    ]
    return "\n".join(out) + "\n"


def _md_table(rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return lines


def render_readme() -> str:
    """The README section "Can I train d32 on my GPU?", from the planner's own output (deterministic)."""
    plans = plan_all_gpus(32, price_per_kwh=0.30, currency="USD")
    by_key = {plan.gpu.key: plan for plan in plans}
    rtx4070 = by_key["rtx4070"]
    t = {x.mfu: x for x in rtx4070.times}
    low, mid, high = t[0.5], t[0.4], t[0.3]
    cheap = make_plan(32, "rtx4070", price_per_kwh=0.10)
    pc = make_plan(32, "rtx4070", price_per_kwh=0.30, host_power_w=100)
    p, h, m = rtx4070.params, rtx4070.horizon, rtx4070.memory
    needed_tflops = (h.total_flops / (6 * 7 * 86400) / 1e12, h.total_flops / (4 * 7 * 86400) / 1e12)
    out = [
        "## Can I train d32 on my GPU?",
        "",
        "<!-- Generated by `python -m nanochat_hf.planner --readme` from nanochat_hf/planner.py and",
        "     nanochat_hf/data/gpus.csv; tests/test_planner.py fails if this file is stale. Do not edit by hand. -->",
        "",
        f"nanochat's d32 has {p.total:,} parameters and is pretrained on {h.tokens:,} tokens "
        f"(20 per parameter): {h.total_flops:.3e} FLOPs. It **fits** a 12 GB RTX 4070 with the `12gb` memory "
        f"mode ({m.total / GIB:.1f} GiB planned on the GPU, {m.static.cpu_total / GIB:.0f} GiB of state in CPU RAM, "
        f"so {m.system_ram_gib} GiB of system RAM), but it takes **{_fmt_months(mid.days)}** "
        f"({mid.days:.0f} days at 40 % MFU; {low.days:.0f}-{high.days:.0f} days at 50-30 %).",
        "",
        f'The document this project started from promised "{SEED_CLAIM}". The arithmetic says otherwise:',
        "",
        f"- **Time.** 4-6 weeks would need {needed_tflops[0]:.0f}-{needed_tflops[1]:.0f} TFLOP/s sustained, "
        f"{needed_tflops[0] / rtx4070.gpu.bf16_tflops:.1f}-{needed_tflops[1] / rtx4070.gpu.bf16_tflops:.1f}x the "
        f"card's dense BF16 peak ({rtx4070.gpu.bf16_tflops:g} TFLOP/s). Even at 100 % of that peak d32 takes "
        f"{rtx4070.floor_days():.0f} days, and at 100 % of the FP8 peak {rtx4070.floor_days(fp8=True):.0f} days.",
        "- **Quantization.** 3-4-bit formats (QLoRA's NF4, GPTQ, EXL2, GGUF) store the frozen weights of an "
        "*already trained* model; QLoRA trains small adapters on top. From random initialisation nothing would "
        "learn, and 4-bit weights are de-quantised to bf16 for every matmul anyway, so they are not faster. What "
        "makes d32 fit is offloading the fp32 master weights, gradient sums and optimizer state to CPU RAM; the "
        "only low-bit path that makes pretraining faster is FP8 matmuls (compute capability >= 8.9), measured at "
        "1.05-1.17x in nanochat.",
        f"- **Energy.** The same document's 150-200 kWh and 15-40 USD become {mid.energy_kwh:,.0f} kWh for the GPU "
        f"alone at 40 % MFU ({pc.chosen_time.energy_kwh:,.0f} kWh with ~100 W for the rest of the PC): "
        f"{cheap.chosen_time.cost:,.0f} USD at 0.10 USD/kWh, {mid.cost:,.0f} USD at 0.30 USD/kWh "
        f"({pc.chosen_time.cost:,.0f} USD for the whole PC).",
        "",
        "d32 on each GPU, with the memory mode the planner picks (`auto`: the least offloading mode that fits), "
        "the largest micro-batch that fits and nanochat's batch of 524,288 tokens per optimizer step:",
        "",
    ]
    out += _md_table(gpu_table_rows(plans))
    out += [
        "",
        "Memory modes: `full` = nanochat as is (fp32 weights, gradients and optimizer state on the GPU); `24gb` = "
        "fp32 weights and gradients with 8-bit optimizer state on the GPU; `12gb` = bf16 weights on the GPU, "
        "gradients streamed per layer to CPU RAM and summed in fp32 there, fp32 master weights and optimizer "
        "state in CPU RAM (no activation checkpointing); `8gb` = `12gb` plus activation checkpointing (+31 % "
        "compute for d32). GPU GiB is the planned peak with eager activations, the CUDA context and a 5 % margin.",
        "",
        "Smaller models on the same cards (days at 40 % MFU, memory mode picked by the planner):",
        "",
    ]
    rows = [
        ["model", "parameters", "tokens", "FLOPs"]
        + [by_key[k].gpu.name.replace("NVIDIA GeForce ", "") for k in ("rtx4070", "rtx4090", "8xh100")]
    ]
    for depth in (20, 26, 32):
        depth_plans = [make_plan(depth, key) for key in ("rtx4070", "rtx4090", "8xh100")]
        first = depth_plans[0]
        rows.append(
            [
                f"d{depth}",
                f"{first.params.total / 1e9:.2f} B",
                f"{first.horizon.tokens / 1e9:.1f} B",
                f"{first.horizon.total_flops:.2e}",
            ]
            + [f"{_fmt_days(x.chosen_time.days)} ({x.memory.mode})" for x in depth_plans]
        )
    out += _md_table(rows)
    out += [
        "",
        "How these numbers are made: FLOPs/token = 6 x (parameters - embedding) + 12 x layers x width x 2048 "
        "(nanochat's own formula); days = total FLOPs / (MFU x dense BF16 peak), plus the optimizer step (Muon's "
        "Newton-Schulz on the GPU) and, for offloading modes, the PCIe copies and CPU work that cannot overlap "
        "with compute; energy = hours x board power. MFU 30-50 % is the planning band (nanochat's d32 run on "
        "8 x H100 reached 50.9 %); none of it is measured on these cards yet. For your own card, budget and "
        "price: `nanochat-hf plan --depth 32 --gpu rtx4070 --mfu 0.4 --price-kwh 0.30 --currency USD` "
        "(`--all-gpus` for the table, `--json` for every number). The formulas are documented in "
        "`nanochat_hf/planner.py`; every GPU figure has its source in `nanochat_hf/data/gpus.csv`.",
        "",
    ]
    return "\n".join(out)


def write_readme(path: Path = README_PATH) -> Path:
    """Write `render_readme()` to `path` atomically (temp file, then rename)."""
    return write_text_atomically(path, render_readme())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanochat_hf.planner", description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help=f"write the README section to {README_PATH}")
    parser.add_argument("--output", type=Path, default=README_PATH, help="where --readme writes")
    args = parser.parse_args(argv)
    if not args.readme:
        parser.print_help()
        return 2
    print(f"wrote {write_readme(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
