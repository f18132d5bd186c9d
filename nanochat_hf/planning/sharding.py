"""Optimizer state per process and communication per step of a sharded run (torch-free).

`sharded_optimizer_state_bytes` is the byte model of `nanochat_hf/optim/sharded.py`'s layout, exact
(tested against the bytes of real tensors): with N processes each rank holds the momentum of its Muon
matrices (round-robin inside each shape: 1/N of them when N divides each shape's count, else the first
ranks one more) and 1/N of the rows of each AdamW tensor whose first
dimension N divides (the others whole), plus every AdamW tensor's 4-byte `step`.

`communication_bytes_per_step` is what one rank sends and receives per optimizer step for each layout,
the usual ring-collective volumes: an all-reduce of B bytes moves 2·(N−1)/N·B, an all-gather or
reduce-scatter (N−1)/N·B, a gather-to-owner and scatter-from-owner (N−1)/N·B each (averaged over the
owners). Gradient accumulation communicates once per step (DDP's `no_sync` / FSDP's reduce on the last
micro-step), so the volume does not grow with the accumulation.
"""

from dataclasses import dataclass

from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.flops import ModelShape, param_tensors
from nanochat_hf.planning.memory_modes import DTYPE_BYTES, MemoryKnobs


STEP_BYTES = 4  # torch AdamW's float32 `step` tensor, one per AdamW tensor, on every rank


def _check(knobs: MemoryKnobs, world_size: int) -> None:
    if world_size < 1:
        raise UserInputError(f"world_size must be at least 1, got {world_size}")
    if knobs.muon_momentum != "full" or knobs.adamw_state != "full" or knobs.master_weights != "gpu":
        raise UserInputError(
            "the sharded optimizer keeps full-precision state next to the GPU weights: it combines with neither "
            "8-bit optimizer state nor CPU master weights (memory modes other than 'full')"
        )


def _state_dtype(group: str, knobs: MemoryKnobs) -> str:
    return knobs.embedding_dtype if group == "embedding" else knobs.weights_dtype


def sharded_optimizer_state_bytes(shape: ModelShape, knobs: MemoryKnobs, world_size: int, rank: int = 0) -> int:
    """Bytes of optimizer state rank `rank` holds (rank 0 holds the most); world_size 1 = unsharded."""
    _check(knobs, world_size)
    if not 0 <= rank < world_size:
        raise UserInputError(f"rank must be in 0..{world_size - 1}, got {rank}")
    matrices: dict[tuple[int, int], list[int]] = {}
    total = 0
    for tensor in param_tensors(shape):
        bytes_per = DTYPE_BYTES[_state_dtype(tensor.group, knobs)]
        if tensor.group == "matrix":
            matrices.setdefault((tensor.rows, tensor.cols), []).append(tensor.numel * bytes_per)
            continue
        moments = 2 * tensor.numel * bytes_per
        total += (moments // world_size if tensor.rows % world_size == 0 else moments) + STEP_BYTES
    for sizes in matrices.values():
        total += sum(sizes[rank::world_size])
    return total


@dataclass(frozen=True)
class Communication:
    """Bytes one rank sends + receives per optimizer step (ring-collective volumes)."""

    layout: str
    gradients: int  # DDP's all-reduce, or FSDP's reduce-scatter
    parameters: int  # all-gathers of updated or sharded parameters
    muon_owner: int  # FSDP2 sharded Muon: gathers to the owner and scatters back

    @property
    def total(self) -> int:
        return self.gradients + self.parameters + self.muon_owner


LAYOUTS = ("ddp_replicated", "ddp_sharded", "fsdp2_sharded_muon", "fsdp2_adamw")


def communication_bytes_per_step(
    shape: ModelShape, world_size: int, layout: str, *, grad_dtype: str = "float32", param_dtype: str = "float32"
) -> Communication:
    """Per-rank communication of one optimizer step for `layout` (one of LAYOUTS).

    FSDP2 all-gathers the parameters for forward and again for backward (reshard_after_forward).
    """
    if layout not in LAYOUTS:
        raise UserInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    tensors = param_tensors(shape)
    grad_bytes = sum(t.numel for t in tensors) * DTYPE_BYTES[grad_dtype]
    param_bytes = sum(t.numel for t in tensors) * DTYPE_BYTES[param_dtype]
    muon_bytes = sum(t.numel for t in tensors if t.group == "matrix") * DTYPE_BYTES[param_dtype]
    share = (world_size - 1) / world_size
    if layout == "ddp_replicated":
        return Communication(layout, round(2 * share * grad_bytes), 0, 0)
    if layout == "ddp_sharded":
        return Communication(layout, round(2 * share * grad_bytes), round(share * param_bytes), 0)
    fsdp_gathers = round(2 * share * param_bytes)
    owner = round(3 * share * muon_bytes) if layout == "fsdp2_sharded_muon" else 0
    return Communication(layout, round(share * grad_bytes), fsdp_gathers, owner)


STATIC_LAYOUTS = ("ddp_replicated", "ddp_sharded", "fsdp2_sharded_muon")


def static_gpu_bytes_per_rank(shape: ModelShape, knobs: MemoryKnobs, world_size: int, layout: str) -> int:
    """Weights + gradients + optimizer state (+ autocast's bf16 weight copies) on one GPU, by layout.

    DDP keeps whole weights and gradients on every GPU; `ddp_sharded` divides the optimizer state by N
    (`sharded_optimizer_state_bytes`). FSDP2 divides all three by N and adds what is gathered at a time:
    two units (the one computing and the one prefetched), each the largest of one block, wte and lm_head,
    as weights and gradients; this part is an estimate, the rest exact.
    """
    if layout not in STATIC_LAYOUTS:
        raise UserInputError(f"layout must be one of {', '.join(STATIC_LAYOUTS)}, got {layout!r}")
    tensors = param_tensors(shape)
    weights = sum(t.numel * DTYPE_BYTES[_state_dtype(t.group, knobs)] for t in tensors)
    casts = 2 * sum(t.numel for t in tensors if t.group != "embedding") if knobs.weight_cast_copies else 0
    if layout == "ddp_replicated":
        return 2 * weights + sharded_optimizer_state_bytes(shape, knobs, 1) + casts
    if layout == "ddp_sharded":
        return 2 * weights + sharded_optimizer_state_bytes(shape, knobs, world_size) + casts
    block = sum(t.numel * DTYPE_BYTES[knobs.weights_dtype] for t in tensors if t.name.startswith("transformer.h.0."))
    edge = max(t.numel * DTYPE_BYTES[_state_dtype(t.group, knobs)] for t in tensors if t.group != "matrix")
    gathered = 2 * 2 * max(block, edge)
    state = sharded_optimizer_state_bytes(shape, knobs, world_size)
    return (2 * weights + casts) // world_size + state + gathered
