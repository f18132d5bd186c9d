"""The full pretraining plan: will a nanochat model fit a GPU, and what will pretraining it cost?

`make_plan` combines the model's shapes and FLOPs (`flops.py`), the horizon (`horizon.py`), the memory-mode
choice (`choice.py`) and time/energy over an MFU band (`time_energy.py`) into a `Plan` (plain
dataclasses, `to_dict()` for JSON); `report.py` turns plans into text. `nanochat-hf plan` and a recipe's
`--dry_run` show it; a real run only asks `choose_mode`.
"""

import dataclasses
import math
from dataclasses import dataclass, field

from nanochat_hf.defaults import SEQUENCE_LEN, TOTAL_BATCH_SIZE
from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.choice import ModeChoice, choose_mode
from nanochat_hf.planning.flops import (
    ModelShape,
    ParamCounts,
    attention_flops_per_token,
    flops_per_token,
    param_counts,
    recompute_flops_per_token,
)
from nanochat_hf.planning.gpus import GpuSpec, get_gpu, load_gpu_table, require_listed, resolve_gpu
from nanochat_hf.planning.horizon import GEN2_RATIO, Horizon, gen2_horizon, training_horizon
from nanochat_hf.planning.host_sum_time import choose_flush_every, host_sum_seconds
from nanochat_hf.planning.memory import MemoryPlan, table_params, unique_rows
from nanochat_hf.planning.time_energy import (
    DEFAULT_CURRENCY,
    DEFAULT_MFU,
    DEFAULT_MFU_BAND,
    DEFAULT_PRICE_PER_KWH,
    HOST_DRAM_GBS,
    TimeEstimate,
    estimate_time,
)


DEFAULT_GPU = "rtx4070"


@dataclass
class Plan:
    shape: ModelShape
    gpu: GpuSpec
    params: ParamCounts
    horizon: Horizon
    choice: ModeChoice
    times: list[TimeEstimate]  # over the MFU band, ascending MFU
    chosen_mfu: float
    price_per_kwh: float
    currency: str
    host_power_w: float
    notes: list[str] = field(default_factory=list)
    knob_overrides: dict = field(default_factory=dict)  # applied to every mode, as `choose_mode` does

    @property
    def depth(self) -> int:
        return self.shape.n_layer

    @property
    def flops_per_token(self) -> int:
        return self.horizon.flops_per_token

    @property
    def attention_flops_per_token(self) -> int:
        return attention_flops_per_token(self.shape)

    @property
    def requested_mode(self) -> str:
        return self.choice.requested_mode

    @property
    def memory(self) -> MemoryPlan:
        return self.choice.memory

    @property
    def modes(self) -> dict[str, MemoryPlan]:
        return self.choice.modes

    @property
    def suggestion(self) -> str | None:
        return self.choice.suggestion

    @property
    def fits(self) -> bool:
        return self.choice.fits

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
            "horizon": self.horizon.to_dict(),
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
            "knob_overrides": self.knob_overrides,
            "notes": self.notes,
        }


def _plan_gpu(gpu) -> tuple[GpuSpec, str | None]:
    """The GPU to plan for (`resolve_gpu`), with a note when it was detected or defaulted."""
    resolved = resolve_gpu(gpu)
    if resolved is None:
        return get_gpu(DEFAULT_GPU), f"no CUDA GPU detected; planning for {DEFAULT_GPU} (use --gpu to choose)"
    require_listed(resolved, "time and energy estimates")
    if isinstance(gpu, GpuSpec) or gpu:
        return resolved, None
    return resolved, f"planning for the detected GPU ({resolved.name})"


def _notes(shape: ModelShape, gpu: GpuSpec, memory: MemoryPlan) -> list[str]:
    """What the reader of a plan should know about this model, mode and card."""
    notes = []
    if not shape.gen1_buildable:
        notes.append(
            f"generation 1 cannot build d{shape.n_layer} ({64 * shape.n_layer} is not divisible by "
            f"{math.ceil(64 * shape.n_layer / 128)} heads); planned with the 2026 width rule: width {shape.n_embd}, "
            f"{shape.n_head} heads"
        )
    knobs = memory.knobs
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
    if knobs.embedding_location == "cpu_rows":
        rows = unique_rows(shape, memory.micro_batch)
        notes.append(
            f"wte and the value embeddings ({table_params(shape):,} parameters) stay in CPU RAM; each micro-step "
            f"gathers at most {rows:,} rows per table onto the GPU and sends their fp32 gradients back over PCIe "
            f"{gpu.pcie} at {gpu.host_link_gbs:g} GB/s per direction, summed into fp32 in CPU RAM at "
            f"{HOST_DRAM_GBS:g} GB/s; their AdamW update runs on the CPU. Counted without overlap with compute; "
            "to be measured on the GPU"
        )
    if memory.mode == "full" and shape.value_embeddings:
        notes.append(
            "mode 'full' keeps wte in bf16 (bf16 gradient and Adam moments for it) as nanochat does; the value "
            "embeddings stay fp32 in this package (nanochat 2026 casts them to bf16 too)"
        )
    elif memory.mode == "full":
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
    return notes


def _flush_schedule_note(shape: ModelShape, memory: MemoryPlan, micro_step_seconds: float) -> str | None:
    """For an offloading mode whose CPU gradient sums outlast a micro-step: the flush schedule that hides them."""
    if not memory.knobs.offloads or memory.knobs.grad_flush_every > 1:
        return None
    total = param_counts(shape).total
    k, exposed = choose_flush_every(
        total, memory.grad_accum_steps, HOST_DRAM_GBS * 1e9, micro_step_seconds, memory.capacity - memory.total
    )
    if k == 1:
        return None
    _, exposed_every_step = choose_flush_every(
        total, memory.grad_accum_steps, HOST_DRAM_GBS * 1e9, micro_step_seconds, spare_gpu_bytes=0
    )
    per_flush = host_sum_seconds(total, 1, HOST_DRAM_GBS * 1e9)
    return (
        f"the CPU's fp32 gradient sum ({per_flush:.2f} s per flush at {HOST_DRAM_GBS:g} GB/s) outlasts a "
        f"micro-step ({micro_step_seconds:.2f} s): `grad_flush_every: {k}` shows {exposed:.1f} s of it per "
        f"optimizer step instead of {exposed_every_step:.1f} s, for {2 * total / 2**30:.1f} GiB more GPU memory "
        "(one bf16 gradient per parameter)"
    )


def make_plan(
    depth: int = 32,
    gpu: GpuSpec | str | None = DEFAULT_GPU,
    *,
    target_tokens: float | None = None,
    target_param_data_ratio: float | None = None,
    memory_mode: str = "auto",
    knob_overrides: dict | None = None,
    mfu: float = DEFAULT_MFU,
    mfu_band: tuple[float, float] = DEFAULT_MFU_BAND,
    price_per_kwh: float = DEFAULT_PRICE_PER_KWH,
    currency: str = DEFAULT_CURRENCY,
    host_power_w: float = 0.0,
    total_batch_size: int | None = None,
    vocab_size: int | None = None,
    sequence_len: int = SEQUENCE_LEN,
    shape: ModelShape | None = None,
    generation: int = 1,
) -> Plan:
    """Plan pretraining of a depth-`depth` nanochat (or of `shape`) on `gpu` (None: the detected one).

    Generation 2 (`generation=2`, nanochat 2026) counts its ratio in scaling parameters (12 by default,
    `GPT2_SPEEDRUN_RATIO` for the GPT-2 speedrun), takes the automatic batch unless `total_batch_size` is
    given, and chooses among its own memory modes (`full`, `24gb`, `12gb`)."""
    if generation not in (1, 2):
        raise UserInputError(f"generation must be 1 or 2, got {generation!r}")
    for name, value in (("mfu", mfu), *((f"mfu band {i}", v) for i, v in enumerate(mfu_band))):
        if not 0 < value <= 1:
            raise UserInputError(f"{name} must be a fraction in (0, 1], got {value!r}")
    if price_per_kwh < 0 or host_power_w < 0:
        raise UserInputError("price per kWh and host power must not be negative")
    if target_tokens is not None and target_param_data_ratio is not None:
        raise UserInputError(
            "give either target_tokens (--target-tokens) or target_param_data_ratio (--target-param-data-ratio), "
            "not both"
        )
    gpu, gpu_note = _plan_gpu(gpu)
    if shape is None:
        try:
            shape = ModelShape.from_depth(depth, vocab_size, sequence_len, generation=generation)
        except ValueError as err:
            raise UserInputError(f"--depth: {err}") from None
    if generation == 2:
        if target_tokens is not None:
            raise UserInputError("generation 2 sets its horizon by target_param_data_ratio (scaling parameters)")
        horizon = gen2_horizon(
            shape,
            target_param_data_ratio=GEN2_RATIO if target_param_data_ratio is None else target_param_data_ratio,
            total_batch_size=total_batch_size or -1,
        )
        choice = choose_mode(shape, gpu, memory_mode, knob_overrides, horizon.total_batch_size)
    else:
        total_batch_size = total_batch_size or TOTAL_BATCH_SIZE
        choice = choose_mode(shape, gpu, memory_mode, knob_overrides, total_batch_size)
        horizon = training_horizon(
            shape,
            target_tokens=target_tokens,
            target_param_data_ratio=target_param_data_ratio,
            total_batch_size=total_batch_size,
        )
    mfu_points = sorted({mfu_band[0], mfu, mfu_band[1]})
    times = [
        estimate_time(
            shape, gpu, choice.memory, horizon, point, price_per_kwh=price_per_kwh, host_power_w=host_power_w
        )
        for point in mfu_points
    ]
    chosen_time = next(t for t in times if t.mfu == mfu)
    flush_note = _flush_schedule_note(shape, choice.memory, chosen_time.micro_step_seconds)
    return Plan(
        shape=shape,
        gpu=gpu,
        params=param_counts(shape),
        horizon=horizon,
        choice=choice,
        times=times,
        chosen_mfu=mfu,
        price_per_kwh=price_per_kwh,
        currency=currency,
        host_power_w=host_power_w,
        notes=([gpu_note] if gpu_note else [])
        + choice.notes
        + _notes(shape, gpu, choice.memory)
        + ([flush_note] if flush_note else []),
        knob_overrides=dict(knob_overrides or {}),
    )


def plan_all_gpus(depth: int = 32, **kwargs) -> list[Plan]:
    """One plan per row of the GPU table, in table order."""
    return [make_plan(depth, gpu, **kwargs) for gpu in load_gpu_table()]
