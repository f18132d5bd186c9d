"""The GPU table (memory, dense BF16 peak, board power, one source per row) and `resolve_gpu`.

The numbers live in `gpus.csv` beside this file, so a new card is one line of data, not code. Peaks are
*dense* BF16 tensor rates with FP32 accumulate, the rate PyTorch's bf16 matmuls actually get (GeForce cards run it at half their FP16-accumulate headline).
They are the denominators of MFU, here and in the training callbacks.

A row may describe a node of several identical GPUs (`num_gpus`, e.g. nanochat's 8 x H100): its
per-GPU columns stay per GPU, and the `total_*` properties multiply them out.

`resolve_gpu` is the one answer to "which GPU is this run on": a named row, else the detected card's row.
A CUDA card the table does not list is described by what torch reports about it (name, memory, compute
capability) with its speed figures unknown (`listed=False`): memory plans work for it, while figures
that need its speed - MFU, energy from board power, the planner's days and kWh - are left out or refused
with a message that names the card and asks for `--gpu`.
"""

import csv
import functools
import re
from dataclasses import dataclass
from importlib import resources

from nanochat_hf.errors import UserInputError


GIB = 2**30

# Effective host<->GPU copy rate of a PCIe 4.0 x16 link, per direction: ~25 GB/s of the 31.5 GB/s the
# link signals (pinned-memory copies). Each PCIe generation doubles it; the width scales it linearly.
PCIE4_X16_EFFECTIVE_GBS = 25.0

# A detected device matches a row only if its memory is within this fraction of the row's: it tells an
# RTX 4060 Ti 16 GB from the 8 GB card with the same name, and an A100 80 GB from the 40 GB one.
MEMORY_MATCH_TOLERANCE = 0.15


@dataclass(frozen=True)
class GpuSpec:
    key: str
    name: str
    num_gpus: int
    memory_gib: float  # per GPU
    bf16_tflops: float | None  # per GPU, dense, FP32 accumulate; None for a card not in the table
    fp8_tflops: float | None  # per GPU, dense; None where the card has no FP8 tensor cores
    board_power_w: float | None  # per GPU; None for a card not in the table
    compute_capability: tuple[int, int]
    memory_bandwidth_gbs: float | None
    pcie: str  # "<generation> x<lanes>", e.g. "4.0 x16"; "" when unknown
    device_name_pattern: str  # regex searched in torch.cuda.get_device_name(); "" = never auto-detected
    source: str
    listed: bool = True  # False: a detected card the table does not describe (speed figures unknown)

    @property
    def peak_bf16_flops(self) -> float | None:
        """Per-GPU dense BF16 peak in FLOP/s (the MFU denominator of one device)."""
        return None if self.bf16_tflops is None else self.bf16_tflops * 1e12

    @property
    def total_bf16_tflops(self) -> float | None:
        return None if self.bf16_tflops is None else self.bf16_tflops * self.num_gpus

    @property
    def total_board_power_w(self) -> float | None:
        return None if self.board_power_w is None else self.board_power_w * self.num_gpus

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)

    @property
    def supports_fp8(self) -> bool:
        """FP8 tensor cores with FP32 accumulate exist from compute capability 8.9 (Ada, Hopper and later)."""
        return self.compute_capability >= (8, 9)

    @property
    def host_link_gbs(self) -> float | None:
        """Effective host<->GPU bandwidth per direction in GB/s (10^9 bytes), from the PCIe link."""
        if not self.pcie:
            return None
        generation, lanes = self.pcie.split(" x")
        return PCIE4_X16_EFFECTIVE_GBS * 2 ** (float(generation) - 4.0) * int(lanes) / 16


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _parse_row(row: dict) -> GpuSpec:
    major, minor = row["compute_capability"].split(".")
    return GpuSpec(
        key=row["key"],
        name=row["name"],
        num_gpus=int(row["num_gpus"]),
        memory_gib=float(row["memory_gib"]),
        bf16_tflops=float(row["bf16_tflops"]),
        fp8_tflops=float(row["fp8_tflops"]) if row["fp8_tflops"] else None,
        board_power_w=float(row["board_power_w"]),
        compute_capability=(int(major), int(minor)),
        memory_bandwidth_gbs=float(row["memory_bandwidth_gbs"]),
        pcie=row["pcie"],
        device_name_pattern=row["device_name_pattern"],
        source=row["source"],
    )


@functools.cache
def load_gpu_table() -> tuple[GpuSpec, ...]:
    """All rows of `gpus.csv`, in file order (slowest consumer cards first, nodes last)."""
    text = resources.files("nanochat_hf.planning").joinpath("gpus.csv").read_text(encoding="utf-8")
    return tuple(_parse_row(row) for row in csv.DictReader(text.splitlines()))


def known_gpu_keys() -> list[str]:
    return [gpu.key for gpu in load_gpu_table()]


def get_gpu(key: str) -> GpuSpec:
    """Look a GPU up by its key (`rtx4070`) or name; case, spaces and dashes do not matter."""
    wanted = _normalise(str(key))
    for gpu in load_gpu_table():
        if wanted in (_normalise(gpu.key), _normalise(gpu.name)):
            return gpu
    raise UserInputError(f"unknown GPU {key!r}; known GPUs: {', '.join(known_gpu_keys())}")


def match_gpu_by_device_name(device_name: str, memory_bytes: int | None = None) -> GpuSpec | None:
    """The single-GPU row whose pattern matches a CUDA device name, or None.

    `memory_bytes` (the device's total memory), when given, must agree with the row within 15 %, so a
    card sold in two memory sizes under one name is only matched in the size the table describes.
    """
    for gpu in load_gpu_table():
        if gpu.num_gpus != 1 or not gpu.device_name_pattern:
            continue
        if not re.search(gpu.device_name_pattern, device_name.strip(), flags=re.IGNORECASE):
            continue
        if (
            memory_bytes is not None
            and abs(memory_bytes / GIB - gpu.memory_gib) > MEMORY_MATCH_TOLERANCE * gpu.memory_gib
        ):
            continue
        return gpu
    return None


def detect_gpu() -> GpuSpec | None:
    """The table row of CUDA device 0, or None on a machine without CUDA or with a card not in the table."""
    # torch is imported only to look at the device, so that planning for a named GPU does not need it.
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return match_gpu_by_device_name(props.name, props.total_memory)


def unlisted_gpu(name: str, memory_bytes: int, compute_capability: tuple[int, int]) -> GpuSpec:
    """A card the table does not describe: its own name, memory and capability, its speed unknown."""
    return GpuSpec(
        key="unlisted",
        name=name,
        num_gpus=1,
        memory_gib=memory_bytes / GIB,
        bf16_tflops=None,
        fp8_tflops=None,
        board_power_w=None,
        compute_capability=tuple(compute_capability),
        memory_bandwidth_gbs=None,
        pcie="",
        device_name_pattern="",
        source="torch.cuda.get_device_properties (not in nanochat_hf/planning/gpus.csv)",
        listed=False,
    )


def resolve_gpu(gpu: "GpuSpec | str | None" = None) -> GpuSpec | None:
    """The GPU a run or plan is for: `gpu` (a row, or its key or name), else CUDA device 0.

    None only on a machine without CUDA and no `gpu` given. A detected card that the table does not list
    comes back as `unlisted_gpu(...)` (see the module docstring); an unknown key is a UserInputError.
    """
    if isinstance(gpu, GpuSpec):
        return gpu
    if gpu:
        return get_gpu(gpu)
    detected = detect_gpu()
    if detected is not None:
        return detected
    # As in detect_gpu: torch only to look at the device.
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return unlisted_gpu(props.name, props.total_memory, (props.major, props.minor))


def require_listed(gpu: GpuSpec, what: str) -> None:
    """Refuse a card without speed figures for `what` (e.g. "time and energy estimates")."""
    if not gpu.listed:
        raise UserInputError(
            f"the detected GPU {gpu.name!r} ({gpu.memory_gib:.1f} GiB) is not in nanochat_hf/planning/gpus.csv, "
            f"so its speed is unknown for {what}; pass --gpu with one of: {', '.join(known_gpu_keys())}"
        )
