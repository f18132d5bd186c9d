"""`choose_mode`: which memory mode a run uses on a GPU, and what to do when none fits.

This is the only planning a real run asks for (`nanochat_hf.training.memory`): every named mode's memory
plan with the run's knob overrides, the requested one (or, for `auto`, the least offloading one that
fits), and a suggestion when it does not fit. Time, energy and prose are left to `plan.py` and
`report.py`, which a dry run and `nanochat-hf plan` add on top.
"""

from dataclasses import dataclass, field

from nanochat_hf.defaults import TOTAL_BATCH_SIZE
from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.flops import ModelShape
from nanochat_hf.planning.gpus import GIB, GpuSpec
from nanochat_hf.planning.memory import MemoryPlan, check_knobs_for_shape, plan_memory
from nanochat_hf.planning.memory_modes import MEMORY_MODE_CHOICES, knobs_for_mode, mode_order


@dataclass
class ModeChoice:
    """The memory mode chosen for one model on one GPU, with every named mode for comparison."""

    shape: ModelShape
    gpu: GpuSpec
    requested_mode: str
    memory: MemoryPlan  # the chosen mode (for `auto`, the least offloading one that fits)
    modes: dict[str, MemoryPlan]  # every named mode the overrides allow, least offloading first
    suggestion: str | None = None  # what to do when the chosen mode does not fit
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.memory.fits


def mode_plans(
    shape: ModelShape,
    gpu: GpuSpec,
    overrides: dict,
    total_batch_size: int,
    requested: str = "auto",
) -> dict[str, MemoryPlan]:
    """Every named mode of the model's generation (`mode_order`) with the overrides applied. A mode the
    overrides make invalid (e.g. bf16 weights for `full`) is left out of the comparison, unless it is the
    requested one: then its error is the answer."""
    plans, first_error = {}, None
    for mode in mode_order(shape.generation):
        try:
            knobs = knobs_for_mode(mode, shape.generation, **overrides)
            check_knobs_for_shape(shape, knobs)
        except UserInputError as err:
            if mode == requested:
                raise
            first_error = first_error or err
            continue
        plans[mode] = plan_memory(shape, gpu, mode, knobs, total_batch_size)
    if not plans:
        raise first_error
    return plans


def largest_depth_that_fits(
    gpu: GpuSpec,
    below: int,
    *,
    vocab_size: int,
    sequence_len: int,
    total_batch_size: int = TOTAL_BATCH_SIZE,
    generation: int = 1,
) -> tuple[int, str] | None:
    """(depth, least-offloading mode) of the deepest model under `below` that fits `gpu` at micro-batch 1."""
    for depth in range(below - 1, 0, -1):
        shape = ModelShape.from_depth(depth, vocab_size, sequence_len, generation=generation)
        for mode, plan in mode_plans(shape, gpu, {"micro_batch": 1}, total_batch_size).items():
            if plan.fits:
                return depth, mode
    return None


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB"


def _suggestion(choice_modes: dict[str, MemoryPlan], requested: str, shape, gpu, overrides, total_batch_size) -> str:
    """The nearest mode that fits (after the requested one, wrapping round), else a smaller depth."""
    order = mode_order(shape.generation)
    start = 0 if requested == "auto" else order.index(requested) + 1
    nearer = [choice_modes[m] for m in order[start:] + order[:start] if m in choice_modes]
    nearer = [plan for plan in nearer if plan.fits]
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
            total_batch_size=total_batch_size,
            generation=shape.generation,
        )
        if smaller:
            suggestion = (
                f"No memory mode fits this model on this GPU; the deepest model that fits is "
                f"d{smaller[0]} (memory mode '{smaller[1]}')."
            )
        else:
            suggestion = "No memory mode fits even a one-layer model on this GPU."
    if (overrides.get("micro_batch") or 1) > 1:
        suggestion += " Or let the planner choose the micro-batch (drop the micro_batch override)."
    return suggestion


def choose_mode(
    shape: ModelShape,
    gpu: GpuSpec,
    memory_mode: str = "auto",
    knob_overrides: dict | None = None,
    total_batch_size: int = TOTAL_BATCH_SIZE,
) -> ModeChoice:
    """The memory mode for `shape` on `gpu` (per GPU of a node: `total_batch_size` is all GPUs' batch),
    among the modes of the model's generation (`mode_order(shape.generation)`)."""
    order = mode_order(shape.generation)
    if memory_mode not in MEMORY_MODE_CHOICES:
        raise UserInputError(f"unknown memory mode {memory_mode!r}; expected one of {', '.join(MEMORY_MODE_CHOICES)}")
    if memory_mode != "auto" and memory_mode not in order:
        raise UserInputError(
            f"memory mode {memory_mode!r} is not available for generation {shape.generation}; it has "
            f"{', '.join(('auto',) + order)}"
        )
    overrides = dict(knob_overrides or {})
    modes = mode_plans(shape, gpu, overrides, total_batch_size, memory_mode)
    notes = []
    if memory_mode == "auto":
        chosen = next((plan for plan in modes.values() if plan.fits), list(modes.values())[-1])
        if chosen.fits:
            notes.append(f"memory mode auto -> '{chosen.mode}', the least offloading mode that fits")
    else:
        chosen = modes[memory_mode]
        faster = next((plan for plan in modes.values() if plan.fits), None)
        if chosen.fits and faster is not None and order.index(faster.mode) < order.index(memory_mode):
            notes.append(f"the less offloading mode '{faster.mode}' also fits this GPU")
    suggestion = None
    if not chosen.fits:
        suggestion = _suggestion(modes, memory_mode, shape, gpu, overrides, total_batch_size)
    return ModeChoice(shape, gpu, memory_mode, chosen, modes, suggestion, notes)


def not_fit_message(choice) -> str:
    """Why the chosen mode does not fit, component by component (`choice`: a ModeChoice or a Plan)."""
    m = choice.memory
    parts = (
        f"weights {_gib(m.static.gpu_weights)}, gradients {_gib(m.static.gpu_gradients)}, "
        f"optimizer state {_gib(m.static.gpu_optimizer_state)}"
        + (f", bf16 weight copies {_gib(m.static.gpu_weight_cast_copies)}" if m.static.gpu_weight_cast_copies else "")
        + f", activations {_gib(m.activations_eager)}, logits {_gib(m.logits)}"
        + (f", gathered embedding rows {_gib(m.embedding_rows)}" if m.embedding_rows else "")
        + f", CUDA context {_gib(m.cuda_context)}, margin {_gib(m.margin)}"
    )
    return (
        f"memory mode '{m.mode}' does not fit d{choice.shape.n_layer} on {choice.gpu.name}: it needs {_gib(m.total)} "
        f"per GPU at micro-batch {m.micro_batch} ({parts}) but the card has {_gib(m.capacity)}. {choice.suggestion}"
    )


def require_fit(choice) -> None:
    """Raise a UserInputError naming the numbers and the nearest mode that fits, before training starts."""
    if not choice.fits:
        raise UserInputError(not_fit_message(choice))
