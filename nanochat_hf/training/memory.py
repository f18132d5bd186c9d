"""Memory modes in the pretraining recipe: resolve `memory_mode` and its knobs, check the fit, apply them.

Order of work (`run_pretraining` calls these before anything large is built):
1. `resolve_memory_setup`: the named mode (`auto` asks `planning.choice.choose_mode` for the least
   offloading mode that fits the `--gpu` or detected card; on the CPU `auto` is `full`), with the knobs set
   in the recipe config overriding the mode's own. On a GPU the fit is checked at the run's real
   micro-batch and a mode that does not fit is refused, with its numbers and the nearest mode that does.
   When the config does not give `per_device_train_batch_size`, the planner's micro-batch (the largest that
   fits) is used. Only the memory decision is computed here: no time, energy or report.
2. `check_fp8_support` (when `fp8: true`, `nanochat_hf.fp8`): compute capability >= 8.9 and torchao, else a
   clear error.
3. `NanoChatPretrainer(memory_knobs=...)` applies the knobs to the model (`apply_model_knobs`) and picks the
   optimizer (`build_memory_optimizer`): the offloading engine (`optim/offload.py`) for modes that keep the
   master weights in CPU RAM, `MemoryEfficientMuonAdamW` for 8-bit state on the GPU, nanochat's
   `NanoChatMuonAdamW` otherwise.

Three knobs are not recipe fields of their own, because the run decides them:
- activation checkpointing is TrainingArguments' own `activation_checkpointing` flag (true forces
  per-block checkpointing on; the `8gb` mode turns the flag on, in `pretrain.settle_training_args`);
- the micro-batch is `per_device_train_batch_size`;
- `weight_cast_copies` (the bf16 copies of fp32 weights that eager autocast keeps for backward) is what the
  run will really do: true with bf16 mixed precision and fp32 weights unless `torch_compile` is on. This
  keeps plan and run honest: e.g. the `24gb` mode fits a 24 GiB card only when compiled.
"""

import dataclasses
import logging
from dataclasses import dataclass, field

import torch

from ..errors import UserInputError
from ..optim import nanochat_param_groups
from ..optim.host_embeddings import place_embeddings_on_host
from ..optim.memory_efficient import MemoryEfficientMuonAdamW
from ..optim.offload import OffloadedMuonAdamW
from ..planning.choice import ModeChoice, choose_mode, require_fit
from ..planning.flops import ModelShape
from ..planning.gpus import GIB, GpuSpec, resolve_gpu
from ..planning.horizon import gradient_accumulation_steps
from ..planning.memory_modes import MemoryKnobs, knobs_for_mode


logger = logging.getLogger(__name__)


@dataclass
class MemorySetup:
    """The memory mode a run uses, the knobs it runs with, and (on a GPU) the choice behind them."""

    requested_mode: str
    mode: str
    knobs: MemoryKnobs
    choice: ModeChoice | None = None  # on a GPU
    micro_batch: int | None = None  # set when the planner chose it
    notes: list[str] = field(default_factory=list)
    device_type: str = "cuda"  # where the run trains: "cpu" runs say "on the CPU"

    def describe(self) -> dict:
        """The run-settings section (printed, and written into the model card)."""
        accelerator = "GPU" if self.device_type == "cuda" else self.device_type.upper()
        settings = {"mode": self.mode, "requested": self.requested_mode, "knobs": self.knobs.describe(accelerator)}
        if self.choice is not None:
            memory = self.choice.memory
            settings["planned_gpu_gib"] = round(memory.total / GIB, 2)
            settings["gpu"] = self.choice.gpu.name
            if memory.static.cpu_total:
                settings["planned_cpu_gib"] = round(memory.static.cpu_total / GIB, 2)
        return settings


def knob_overrides(args, training_args) -> dict:
    """The knobs the recipe config sets, plus those the run itself decides (checkpointing, micro-batch, casts)."""
    overrides = args.knob_overrides()
    if training_args.activation_checkpointing:
        overrides["activation_checkpointing"] = "block"
    if training_args.per_device_train_batch_size is not None:
        overrides["micro_batch"] = training_args.per_device_train_batch_size
    # What eager autocast really keeps (see the module docstring); only counted for fp32 weights.
    overrides["weight_cast_copies"] = bool(training_args.bf16) and not training_args.torch_compile
    return overrides


def resolve_memory_setup(
    args,
    training_args,
    shape: ModelShape,
    world_size: int = 1,
    gpu: GpuSpec | None = None,
    generation: int = 1,
    total_batch_size: int | None = None,
) -> MemorySetup:
    """Resolve `args.memory_mode` and the knobs for this run; raise before training if they cannot work.

    `shape` is the model at the run's sequence length. The fit is planned for `gpu` if given, else (on CUDA)
    for `--gpu` or the detected card; on the CPU there is nothing to fit and `auto` means `full`.
    Generation 2 has its own modes (`full`, `24gb`, `12gb`: `planning.memory_modes.mode_order(2)`), planned
    and chosen the same way; `shape.generation` says which.
    """
    requested = args.memory_mode
    overrides = knob_overrides(args, training_args)
    autocast_bf16 = bool(training_args.bf16)
    notes = []
    if gpu is None and training_args.device.type == "cuda":
        gpu = resolve_gpu(args.gpu)
    total_batch_size = total_batch_size if total_batch_size is not None else args.total_batch_size

    def choose(knob_overrides: dict) -> ModeChoice:
        choice = choose_mode(shape, gpu, requested, knob_overrides, total_batch_size=total_batch_size // world_size)
        require_fit(choice)
        return choice

    if gpu is not None:
        gradient_accumulation_steps(total_batch_size, 1, shape.sequence_len, world_size)  # divisibility
        choice = choose(overrides)
        mode, knobs = choice.memory.mode, choice.memory.knobs
    else:
        choice = None
        mode = "full" if requested == "auto" else requested
        if requested == "auto":
            notes.append("no CUDA device: memory mode auto -> full")
        knobs = knobs_for_mode(mode, generation=generation, **overrides)
    check_embedding_location(knobs, generation, world_size)
    if generation == 2 and (knobs.muon_momentum != "full" or knobs.adamw_state != "full"):
        raise UserInputError(
            "generation 2: 8-bit optimizer state (muon_momentum / adamw_state 8bit) is generation 1 only"
        )

    # wte in another dtype than the matmul weights only works under bf16 autocast (the embedding's output
    # feeds the first matmul). nanochat itself keeps wte in bf16 only on CUDA, under autocast.
    if knobs.embedding_dtype != knobs.weights_dtype and not autocast_bf16:
        if args.embedding_dtype is not None:
            raise UserInputError(
                f"embedding_dtype {knobs.embedding_dtype} with weights_dtype {knobs.weights_dtype} needs bf16 mixed "
                "precision (--bf16 true); without it set both to the same dtype"
            )
        notes.append(f"no bf16 autocast: wte kept in {knobs.weights_dtype}, like the other weights")
        overrides["embedding_dtype"] = knobs.weights_dtype
        knobs = dataclasses.replace(knobs, embedding_dtype=knobs.weights_dtype)
        if choice is not None:
            requested = mode
            choice = choose(overrides)
            knobs = choice.memory.knobs

    if knobs.offloads and world_size > 1:
        raise UserInputError(
            f"memory mode '{mode}' keeps the master weights and gradient sums of ONE GPU in CPU RAM and does not run "
            f"with {world_size} processes; use memory_mode full or 24gb for multi-GPU training"
        )
    micro_batch = None
    if choice is not None and training_args.per_device_train_batch_size is None:
        micro_batch = choice.memory.micro_batch
        notes.append(f"micro-batch {micro_batch} chosen by the planner (the largest that fits)")
    if choice is not None:
        notes += [note for note in choice.notes if note.startswith("memory mode auto")]
    setup = MemorySetup(args.memory_mode, mode, knobs, choice, micro_batch, notes, training_args.device.type)
    for note in notes:
        logger.info("memory: %s", note)
    return setup


# ---------------------------------------------------------------------------------------------------------
# Applying the knobs


def check_embedding_location(knobs: MemoryKnobs, generation: int, world_size: int) -> None:
    """`embedding_location: cpu_rows` runs a generation-2 model on one process (see `optim/host_embeddings.py`)."""
    if knobs.embedding_location != "cpu_rows":
        return
    if generation != 2:
        raise UserInputError(
            f"memory knob `embedding_location: cpu_rows` is for generation 2's wte and value embeddings (memory "
            f"modes 24gb / 12gb of --generation 2); this model is generation {generation}: set "
            "`embedding_location: gpu`"
        )
    if world_size > 1:
        raise UserInputError(
            f"memory knob `embedding_location: cpu_rows` (generation 2's memory modes 24gb / 12gb) keeps the tables' "
            f"gradient sums of ONE process in CPU RAM, which DDP does not average; it does not run with {world_size} "
            "processes: use memory_mode full (or `embedding_location: gpu`) for multi-GPU training"
        )


def apply_model_knobs(model, knobs: MemoryKnobs, device_type: str = "cuda") -> None:
    """Loss chunking, and wte's dtype (modes without offloading) or, with `embedding_location: cpu_rows`, the
    tables placed in CPU RAM (before the optimizer is built, so it holds their fp32 host parameters).
    Activation checkpointing is the Trainer's: `pretrain.settle_training_args` turns its flag on for the
    modes that need it."""
    model.loss_chunk_size = knobs.loss_chunk_size or None
    if knobs.embedding_location == "cpu_rows":
        placement = place_embeddings_on_host(model, getattr(torch, knobs.embedding_dtype))
        logger.info("memory: %s", placement.describe("GPU" if device_type == "cuda" else device_type.upper()))
        return
    if not knobs.offloads:
        # fp32 matmul weights are the master copy; only nanochat's wte may be bf16 (under autocast).
        model.get_input_embeddings().to(getattr(torch, knobs.embedding_dtype))


def build_memory_optimizer(model, knobs: MemoryKnobs, training_args, optimizer_settings: dict):
    """The optimizer a mode needs, or None for nanochat's plain `NanoChatMuonAdamW`."""
    if knobs.offloads:
        return OffloadedMuonAdamW(
            model,
            device=training_args.device,
            weights_dtype=getattr(torch, knobs.weights_dtype),
            embedding_dtype=getattr(torch, knobs.embedding_dtype),
            grad_bucket_layers=knobs.grad_bucket_layers,
            flush_every=knobs.grad_flush_every,
            max_grad_norm=training_args.max_grad_norm,
            muon_momentum=knobs.muon_momentum,
            adamw_state=knobs.adamw_state,
            **optimizer_settings,
        )
    if knobs.muon_momentum == "8bit" or knobs.adamw_state == "8bit":
        return MemoryEfficientMuonAdamW(
            nanochat_param_groups(model, **optimizer_settings),
            muon_momentum=knobs.muon_momentum,
            adamw_state=knobs.adamw_state,
            paged=knobs.paged_optimizer,
        )
    return None
