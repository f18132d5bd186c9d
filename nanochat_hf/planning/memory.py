"""The byte model: GPU and CPU memory of training a nanochat model, by component, predicted to the byte.

- Static state (weights, gradients, optimizer state, autocast's bf16 weight copies; CPU-side masters,
  gradient sums, optimizer state and pinned staging for the offloading modes): exact, tested against
  the bytes of real tensors.
- Activations per block: 26-38 bytes per element of the micro_batch x T x d residual stream (Inductor
  compiled .. eager), or, with per-block checkpointing, each block's input plus one block at a time.
- Logits: bytes per (token x vocab) element of the soft-capped loss, whole or one chunk at a time.
- Fixed overheads: the CUDA context (planned 0.4 GiB) and a 5 % allocator margin.

Generation 2 (`shape.generation == 2`) is trained by its own MuonAdamW (`optim/muon_adamw_gen2.py`): per
block matrix a momentum buffer and NorMuon's factored second moment (rows x 1 when rows >= cols, else
1 x cols), both in the matrix's dtype; AdamW's two moments (in the parameter's dtype) and a 4-byte `step`
for lm_head, wte, the value embeddings and the scalars. In `full` the run casts wte to bf16 and keeps the
value embeddings in fp32 (`training.memory.apply_model_knobs` casts the input embedding only), and that is
what is counted. With `embedding_location: cpu_rows` (its `24gb` / `12gb` modes) wte and the value
embeddings live in CPU RAM: fp32 weight, fp32 gradient sum and fp32 AdamW moments (16 bytes per
parameter), plus pinned staging for one micro-step's rows; the GPU holds only the rows a micro-step can
use, U = min(vocab, micro_batch x T) per table, and their gradients, both in `embedding_dtype`.

`plan_memory` gives one mode's `MemoryPlan` at a micro-batch (or the largest that fits); the fine-tuning
planner (`finetune.py`) uses the same activation, logits and overhead functions.
"""

import dataclasses
import math
from dataclasses import dataclass

from nanochat_hf.defaults import TOTAL_BATCH_SIZE
from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.flops import ModelShape, param_tensors
from nanochat_hf.planning.gpus import GIB, GpuSpec
from nanochat_hf.planning.horizon import gradient_accumulation_steps
from nanochat_hf.planning.memory_modes import (
    DTYPE_BYTES,
    MIN_8BIT_NUMEL,
    QUANT_BLOCK_SIZE,
    QUANT_CODE_BYTES,
    MemoryKnobs,
)


# Fixed overheads: the CUDA context takes ~290 MB with lazy module loading (PyTorch's default since 1.13)
# and up to ~670 MB without; 0.4 GiB is planned. It is outside torch.cuda.max_memory_reserved. Another 5 %
# of the card is kept free for allocator fragmentation.
CUDA_CONTEXT_BYTES = int(0.4 * GIB)
ALLOCATOR_MARGIN = 0.05

# Activation bytes per element of the residual stream E = micro_batch x T x d, per block: eager PyTorch
# saves 19 bf16 tensors' worth (x, normed x twice, q/k after rotary, SDPA's q/k/v/out, the attention
# output, the mid-block residual, 4d-wide relu and relu^2 outputs); Inductor recomputes the cheap
# pointwise ones and keeps ~13. d32 at micro-batch 1: 3.25 .. 4.75 GiB over its 32 blocks.
ACTIVATION_BYTES_EAGER = 38
ACTIVATION_BYTES_COMPILED = 26
# Per-block checkpointing keeps each block's bf16 input (2 bytes) and, while one block is recomputed,
# its activations plus the transient gradients of backward: the 4d-wide hidden (8) and the residual
# stream in and out (4), ~100 MiB for d32.
CHECKPOINT_INPUT_BYTES = 2
CHECKPOINT_TRANSIENT_GRAD_BYTES = 12

# Logits, bytes per (token x vocab) element: bf16 lm_head output (2) + its fp32 upcast (4) + the fp32
# soft-capped logits (4); the whole-sequence eager loss also keeps the fp32 log-softmax (4), 1.5-2 GiB
# for d32 at 2,048 tokens. A chunked loss holds one chunk at a time.
LOGITS_BYTES_CHUNKED = 10
LOGITS_BYTES_WHOLE = 14

# CPU RAM beyond the offloaded state: operating system, Python, data loader (an assumption).
HOST_RAM_OVERHEAD_GIB = 8
SYSTEM_RAM_SIZES_GIB = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


# The lookup tables `embedding_location: cpu_rows` keeps in CPU RAM: wte and generation 2's value embeddings.
TABLE_GROUPS = ("embedding", "value_embeds")
# Gradients of the gathered rows travel GPU -> host in fp32 (and are staged there in pinned fp32).
ROW_GRADIENT_TRANSFER_BYTES = 4


def _gpu_dtype(group: str, knobs: MemoryKnobs) -> str:
    # Only wte is cast to `embedding_dtype` by the run; generation 2's value embeddings keep the weights' dtype.
    return knobs.embedding_dtype if group == "embedding" else knobs.weights_dtype


def _on_gpu(tensor, knobs: MemoryKnobs) -> bool:
    """Whether the tensor is a parameter on the GPU (cpu_rows keeps the lookup tables in CPU RAM)."""
    return not (knobs.embedding_location == "cpu_rows" and tensor.group in TABLE_GROUPS)


def _is_linear_weight(tensor) -> bool:
    """Weights that meet a matmul (what autocast casts and caches): block matrices, lm_head, the smear gate."""
    return tensor.group in ("matrix", "lm_head") or tensor.name.endswith("smear_gate.weight")


def check_knobs_for_shape(shape: ModelShape, knobs: MemoryKnobs) -> None:
    """Knob combinations the model's generation cannot train with, refused before anything is planned."""
    if shape.generation == 2 and (knobs.offloads or knobs.muon_momentum != "full" or knobs.adamw_state != "full"):
        raise UserInputError(
            "generation 2: the offloading engine (master_weights / optimizer_location / grad_accumulation cpu) and "
            "8-bit optimizer state (muon_momentum / adamw_state 8bit) are generation 1's; generation 2 saves "
            "memory with `embedding_location: cpu_rows` (its 24gb and 12gb modes)"
        )
    if shape.generation == 1 and knobs.embedding_location == "cpu_rows":
        raise UserInputError(
            "memory knob `embedding_location: cpu_rows` is generation 2's (it moves wte and the value embeddings "
            "to CPU RAM); generation 1 saves memory with its 24gb / 12gb / 8gb modes"
        )


def table_width(shape: ModelShape) -> int:
    """Values per token id over every lookup table: wte's width plus each value embedding's."""
    return sum(t.cols for t in param_tensors(shape) if t.group in TABLE_GROUPS)


def table_params(shape: ModelShape) -> int:
    return sum(t.numel for t in param_tensors(shape) if t.group in TABLE_GROUPS)


def unique_rows(shape: ModelShape, micro_batch: int) -> int:
    """The most distinct token ids one micro-step can use (the worst case the cpu_rows buffers are sized for)."""
    return min(shape.vocab_size, micro_batch * shape.sequence_len)


def gathered_row_bytes(shape: ModelShape, knobs: MemoryKnobs, micro_batch: int) -> int:
    """cpu_rows on the GPU: the gathered rows of every table and their gradients, both in `embedding_dtype`."""
    if knobs.embedding_location != "cpu_rows":
        return 0
    return 2 * unique_rows(shape, micro_batch) * table_width(shape) * DTYPE_BYTES[knobs.embedding_dtype]


def _updated_dtype(group: str, knobs: MemoryKnobs) -> str:
    """dtype of the tensor the optimizer updates: the fp32 master when there is one, else the GPU weight."""
    return "float32" if knobs.master_weights == "cpu" else _gpu_dtype(group, knobs)


def _quantized_bytes(numel: int) -> int:
    """One blockwise-quantised state tensor: uint8 values + one fp32 absmax per block."""
    return numel + 4 * math.ceil(numel / QUANT_BLOCK_SIZE)


def muon_state_bytes(shape: ModelShape, knobs: MemoryKnobs) -> int:
    """Muon's momentum: one buffer per block matrix, fp32 (as the grad of the fp32 master) or 8-bit;
    generation 2 adds NorMuon's factored second moment per matrix (rows x 1 if rows >= cols, else 1 x cols)."""
    total, any_quantized = 0, False
    for tensor in param_tensors(shape):
        if tensor.group != "matrix":
            continue
        dtype_bytes = DTYPE_BYTES[_updated_dtype(tensor.group, knobs)]
        if knobs.muon_momentum == "8bit" and tensor.numel >= MIN_8BIT_NUMEL:
            total += _quantized_bytes(tensor.numel)
            any_quantized = True
        else:
            total += tensor.numel * dtype_bytes
        if shape.generation == 2:
            total += (tensor.rows if tensor.rows >= tensor.cols else tensor.cols) * dtype_bytes
    return total + (QUANT_CODE_BYTES if any_quantized else 0)


def adamw_state_bytes(shape: ModelShape, knobs: MemoryKnobs) -> int:
    """AdamW state on the GPU: wte and lm_head (generation 2: also the value embeddings and the scalars;
    with cpu_rows not the tables, whose moments are in CPU RAM).

    "full" is torch.optim.AdamW's layout: exp_avg and exp_avg_sq in the updated parameter's dtype plus a
    4-byte `step` tensor. "8bit" is bitsandbytes AdamW8bit: two quantised states per tensor of >= 4,096
    values (fp32 below that), two code books shared by the whole optimizer, `step` a Python int.
    """
    total, any_quantized = 0, False
    for tensor in param_tensors(shape):
        if tensor.group == "matrix" or not _on_gpu(tensor, knobs):
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
    """Bytes of training state that do not depend on the micro-batch (except cpu_rows' pinned row staging,
    sized for the plan's micro-batch). With cpu_rows the CPU fields hold the lookup tables: their fp32
    weights (`cpu_master_weights`), fp32 gradient sums and AdamW moments."""

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


def static_memory(shape: ModelShape, knobs: MemoryKnobs, micro_batch: int = 1) -> StaticMemory:
    """The static state of `knobs` for `shape` (`micro_batch` sizes cpu_rows' pinned row staging only)."""
    tensors = param_tensors(shape)
    n_total = sum(t.numel for t in tensors)
    gpu_weights = sum(t.numel * DTYPE_BYTES[_gpu_dtype(t.group, knobs)] for t in tensors if _on_gpu(t, knobs))
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
        bucket_bytes = min(knobs.grad_bucket_layers, shape.n_layer) * layer_bytes + edge_bytes
        # Flushing every k > 1 micro-steps, each parameter's gradient stays on the GPU between flushes.
        gpu_gradients = gpu_weights if knobs.grad_flush_every > 1 else bucket_bytes
        cpu_gradients, staging = 4 * n_total, bucket_bytes
    fp32_matmul_weights = sum(t.numel for t in tensors if _is_linear_weight(t) and knobs.weights_dtype == "float32")
    on_gpu = knobs.optimizer_location == "gpu"
    cpu_master = 4 * n_total if knobs.master_weights == "cpu" else 0
    cpu_optimizer = 0 if on_gpu else optimizer
    if knobs.embedding_location == "cpu_rows":
        tables = table_params(shape)
        cpu_master, cpu_gradients, cpu_optimizer = 4 * tables, 4 * tables, 8 * tables
        row_values = unique_rows(shape, micro_batch) * table_width(shape)
        staging = row_values * (DTYPE_BYTES[knobs.embedding_dtype] + ROW_GRADIENT_TRANSFER_BYTES)
    return StaticMemory(
        gpu_weights=gpu_weights,
        gpu_gradients=gpu_gradients,
        gpu_optimizer_state=optimizer if on_gpu else 0,
        gpu_weight_cast_copies=2 * fp32_matmul_weights if knobs.weight_cast_copies else 0,
        cpu_master_weights=cpu_master,
        cpu_gradients=cpu_gradients,
        cpu_optimizer_state=cpu_optimizer,
        cpu_pinned_staging=staging,
    )


def activation_bytes(shape: ModelShape, micro_batch: int, checkpointing: bool) -> tuple[int, int]:
    """(compiled, eager) bytes of saved activations at the start of backward, for one micro-batch."""
    elements = micro_batch * shape.sequence_len * shape.n_embd
    if not checkpointing:
        return (
            shape.n_layer * ACTIVATION_BYTES_COMPILED * elements,
            shape.n_layer * ACTIVATION_BYTES_EAGER * elements,
        )
    saved = shape.n_layer * CHECKPOINT_INPUT_BYTES * elements + CHECKPOINT_TRANSIENT_GRAD_BYTES * elements
    return (saved + ACTIVATION_BYTES_COMPILED * elements, saved + ACTIVATION_BYTES_EAGER * elements)


def logits_bytes(shape: ModelShape, micro_batch: int, loss_chunk_size: int | None) -> int:
    """Peak bytes of logits and loss for one micro-batch; `loss_chunk_size` 0/None: the whole-sequence loss."""
    tokens = micro_batch * shape.sequence_len
    if loss_chunk_size:
        return min(loss_chunk_size, tokens) * shape.vocab_size * LOGITS_BYTES_CHUNKED
    return tokens * shape.vocab_size * LOGITS_BYTES_WHOLE


def allocator_margin_bytes(capacity: int) -> int:
    return int(ALLOCATOR_MARGIN * capacity)


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
    embedding_rows: int = 0  # cpu_rows: the gathered rows of wte and the value embeddings and their gradients

    @property
    def per_micro_batch(self) -> int:
        """GPU bytes that grow with the micro-batch, besides the activations: logits and gathered rows."""
        return self.logits + self.embedding_rows

    @property
    def total(self) -> int:
        """Planned peak, with the eager (larger) activation estimate."""
        return self.static.gpu_total + self.activations_eager + self.per_micro_batch + self.cuda_context + self.margin

    @property
    def total_compiled(self) -> int:
        return (
            self.static.gpu_total + self.activations_compiled + self.per_micro_batch + self.cuda_context + self.margin
        )

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
                "gathered_embedding_rows": self.embedding_rows,
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


def _micro_batch_candidates(shape: ModelShape, total_batch_size: int, num_gpus: int) -> list[int]:
    """Powers of two whose micro-steps tile the optimizer step exactly (gradient accumulation >= 1)."""
    candidates, micro_batch = [], 1
    while total_batch_size % (micro_batch * shape.sequence_len * num_gpus) == 0:
        candidates.append(micro_batch)
        micro_batch *= 2
    if not candidates:
        raise UserInputError(
            f"total batch of {total_batch_size} tokens is not a multiple of sequence_len {shape.sequence_len} x "
            f"{num_gpus} GPU(s)"
        )
    return candidates


def plan_memory(
    shape: ModelShape,
    gpu: GpuSpec,
    mode: str,
    knobs: MemoryKnobs,
    total_batch_size: int = TOTAL_BATCH_SIZE,
) -> MemoryPlan:
    """The memory plan of one mode: at `knobs.micro_batch` if set, else the largest micro-batch that fits."""
    check_knobs_for_shape(shape, knobs)

    def at(micro_batch: int) -> MemoryPlan:
        static = static_memory(shape, knobs, micro_batch)
        compiled, eager = activation_bytes(shape, micro_batch, knobs.activation_checkpointing == "block")
        return MemoryPlan(
            mode=mode,
            knobs=knobs,
            micro_batch=micro_batch,
            grad_accum_steps=gradient_accumulation_steps(
                total_batch_size, micro_batch, shape.sequence_len, gpu.num_gpus
            ),
            static=static,
            activations_compiled=compiled,
            activations_eager=eager,
            logits=logits_bytes(shape, micro_batch, knobs.loss_chunk_size),
            cuda_context=CUDA_CONTEXT_BYTES,
            margin=allocator_margin_bytes(gpu.memory_bytes),
            capacity=gpu.memory_bytes,
            embedding_rows=gathered_row_bytes(shape, knobs, micro_batch),
        )

    if knobs.micro_batch is not None:
        return at(knobs.micro_batch)
    best = at(1)
    for micro_batch in _micro_batch_candidates(shape, total_batch_size, gpu.num_gpus)[1:]:
        candidate = at(micro_batch)
        if not candidate.fits:
            break
        best = candidate
    return best
