"""Time, energy and money of a pretraining run at one MFU point.

- time: total FLOPs / (MFU x peak), plus the recomputation of activation checkpointing and the optimizer
  step (Muon's Newton-Schulz on the GPU; for offloading modes also the PCIe copies and the CPU update);
- energy: hours x board power (an upper bound for the GPU alone: training runs a card at or near its
  power limit), optionally plus the rest of the machine (`host_power_w`);
- cost: energy x price per kWh.

The numbers are arithmetic on the model's shapes (`flops.py`), the GPU table (`gpus.py`) and a memory
plan (`memory.py`); `plan.py` combines them.
"""

import dataclasses
import math
from dataclasses import dataclass

from nanochat_hf.planning.flops import (
    ModelShape,
    flops_per_token,
    newton_schulz_flops,
    param_counts,
    recompute_flops_per_token,
)
from nanochat_hf.planning.gpus import GpuSpec, require_listed
from nanochat_hf.planning.horizon import Horizon
from nanochat_hf.planning.host_sum_time import host_sum_seconds
from nanochat_hf.planning.memory import (
    ROW_GRADIENT_TRANSFER_BYTES,
    MemoryPlan,
    table_params,
    table_width,
    unique_rows,
)
from nanochat_hf.planning.memory_modes import DTYPE_BYTES


# nanochat's d32 run on 8 x H100 reached 50.9 % MFU; 30 / 40 / 50 % is the planning band for other cards.
DEFAULT_MFU = 0.4
DEFAULT_MFU_BAND = (0.3, 0.5)
DEFAULT_PRICE_PER_KWH = 0.30
DEFAULT_CURRENCY = "USD"
DAYS_PER_MONTH = 30.44

# Offloading costs: host DRAM bandwidth (dual-channel DDR4; DDR5 is ~2x faster; `nanochat_hf.optim.host_sum.
# measure_host_bandwidth` measures a real host), the CPU traffic of summing streamed gradients into fp32
# accumulators (`host_sum_time`) and of the optimizer update on the CPU (~16 bytes/param: master,
# gradient, momentum/Adam state).
HOST_DRAM_GBS = 35.0
CPU_UPDATE_BYTES_PER_PARAM = 16
# cpu_rows (generation 2's 24gb / 12gb): per gathered value, the host reads the fp32 row and writes it to the
# pinned staging in `embedding_dtype`, and index_add reads and writes the fp32 gradient sum (8 bytes); per
# optimizer step, the CPU AdamW over every table parameter reads p, g, m, v and writes p, m, v (28 bytes),
# and the gradient sums are zeroed for the next step (4 bytes).
ROW_INDEX_ADD_BYTES = 8
CPU_ROWS_ADAMW_BYTES_PER_PARAM = 28 + 4


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
    compute_hours: float  # total FLOPs / (mfu x peak), without the optimizer step
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


def row_transfer_seconds(shape: ModelShape, gpu: GpuSpec, memory: MemoryPlan) -> float:
    """cpu_rows, per micro-step: the host gathers the rows, PCIe carries them to the GPU and their fp32
    gradients back, the host adds those into the fp32 sums; counted in series, without overlap."""
    values = unique_rows(shape, memory.micro_batch) * table_width(shape)
    row_bytes = DTYPE_BYTES[memory.knobs.embedding_dtype]
    pcie = values * (row_bytes + ROW_GRADIENT_TRANSFER_BYTES) / (gpu.host_link_gbs * 1e9)
    host = values * (4 + row_bytes + ROW_INDEX_ADD_BYTES) / (HOST_DRAM_GBS * 1e9)
    return pcie + host


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
    require_listed(gpu, "time and energy estimates")
    knobs = memory.knobs
    peak = mfu * gpu.peak_bf16_flops  # per GPU
    model_flops = flops_per_token(shape)
    recompute = recompute_flops_per_token(shape) if knobs.activation_checkpointing == "block" else 0
    micro_step_tokens = memory.micro_batch * shape.sequence_len
    micro_step_seconds = micro_step_tokens * (model_flops + recompute) / peak
    optimizer_seconds = 0.0
    if knobs.embedding_location == "cpu_rows":
        micro_step_seconds += row_transfer_seconds(shape, gpu, memory)
        optimizer_seconds += table_params(shape) * CPU_ROWS_ADAMW_BYTES_PER_PARAM / (HOST_DRAM_GBS * 1e9)
    forward_backward_seconds = memory.grad_accum_steps * micro_step_seconds

    # Newton-Schulz: bf16 matmuls on the GPU; nanochat spreads the matrices over the GPUs of a node.
    optimizer_seconds += newton_schulz_flops(shape) / (peak * gpu.num_gpus)
    if knobs.offloads:
        counts = param_counts(shape)
        link = gpu.host_link_gbs * 1e9
        dram = HOST_DRAM_GBS * 1e9
        # Every `grad_flush_every` micro-steps the bf16 gradients go to the host and are summed there on a
        # CPU thread while the GPU computes the next micro-steps; only what does not fit under their
        # compute time is added.
        flush_every = min(knobs.grad_flush_every, memory.grad_accum_steps)
        flushes = math.ceil(memory.grad_accum_steps / flush_every)
        grad_copy_seconds = counts.total * DTYPE_BYTES[knobs.weights_dtype] / link
        accumulate_seconds = host_sum_seconds(counts.total, 1, dram)  # one flush
        exposed = max(0.0, max(grad_copy_seconds, accumulate_seconds) - flush_every * micro_step_seconds)
        # Per optimizer step: Nesterov-updated bf16 matrices to the GPU and the orthogonalised ones back,
        # the CPU update of master and state, then the new bf16 weights to the GPU.
        step_transfer_bytes = 2 * 2 * counts.blocks + counts.total * DTYPE_BYTES[knobs.weights_dtype]
        optimizer_seconds += (
            flushes * exposed + step_transfer_bytes / link + counts.total * CPU_UPDATE_BYTES_PER_PARAM / dram
        )
    step_seconds = forward_backward_seconds + optimizer_seconds
    hours = horizon.steps * step_seconds / 3600
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
