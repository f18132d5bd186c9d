"""Memory modes for pretraining: named presets that expand to explicit, individually settable knobs.

The recipe config says `memory_mode: auto | full | 24gb | 12gb | 8gb`; the planner predicts what each mode
costs (`memory.py`) and `auto` picks the least-offloading mode that fits the GPU (`choice.py`). The offload
engine reads the same `MemoryKnobs`, so plan and run cannot drift apart. `MemoryKnobs` is the one list of
knobs: each field carries its help text and allowed values, and the recipe's knob fields are generated
from it (`nanochat_hf.training.arguments`).

What the modes are, for d32 at micro-batch 1 x 2048 tokens:

    full  - nanochat generation 1 as it is: fp32 weights (wte in bf16, as nanochat casts it on CUDA),
            fp32 gradients, fp32 Muon momentum and AdamW state, eager autocast keeping bf16 copies of
            the fp32 weights. d32 needs ~25-30 GiB: a 32 GB card or larger.
    24gb  - fp32 weights and gradients, 8-bit blockwise Muon momentum and bitsandbytes 8-bit AdamW, all
            on the GPU, no cached bf16 weight copies. d32: 16 GiB static, fits 24 GiB cards
            (RTX 3090 / 4090) when compiled, without checkpointing.
    12gb  - bf16 weights on the GPU; each layer's gradients streamed to pinned CPU memory during
            backward and accumulated in fp32 there; fp32 master weights and all optimizer state in CPU
            RAM (Muon's Newton-Schulz still runs on the GPU). d32: 4.2 GiB static, ~8-9.5 GiB in all,
            no activation checkpointing.
    8gb   - 12gb plus per-block activation checkpointing (d32: ~5.2 GiB).

Two quality rules decide which knob combinations are allowed at all (`MemoryKnobs` refuses the others):
gradients accumulated over hundreds of micro-steps must be summed in fp32 (a bf16 sum drops the small
contributions once it is 2^8 times larger than them), and bf16 weights need an fp32 master copy (an
update smaller than ~2^-8 of a weight is lost when added in bf16). `full` keeps nanochat's own bf16 `wte`
(and its bf16 gradient and Adam moments), which is how the reference d32 was trained.
"""

import dataclasses
import warnings
from dataclasses import dataclass, field

from nanochat_hf.errors import UserInputError


# Least to most offloading; `auto` takes the first that fits.
MODE_ORDER = ("full", "24gb", "12gb", "8gb")
MEMORY_MODE_CHOICES = ("auto",) + MODE_ORDER

DTYPE_BYTES = {"float32": 4, "bfloat16": 2}

# 8-bit optimizer state layout, shared with the engine: bitsandbytes' blockwise quantisation keeps one
# uint8 per value plus one fp32 absmax per block of 256 values, and a 256-entry fp32 code book shared by
# all tensors; tensors under 4,096 values stay in fp32 (bitsandbytes' `min_8bit_size`).
QUANT_BLOCK_SIZE = 256
MIN_8BIT_NUMEL = 4096
QUANT_CODE_BYTES = 256 * 4


def _knob(default, help: str, choices: tuple = (), set_by: str | None = None):
    """One knob: its default, its help text, its allowed values; `set_by` names what decides it in a run
    when it is not a recipe field of its own."""
    return field(default=default, metadata={"help": help, "choices": choices, "set_by": set_by})


@dataclass(frozen=True)
class MemoryKnobs:
    """Where each piece of training state lives and in which precision (see each field's help)."""

    weights_dtype: str = _knob(
        "float32", "Dtype of the matmul weights (block matrices, lm_head) on the GPU.", tuple(DTYPE_BYTES)
    )
    embedding_dtype: str = _knob(
        "float32",
        "Dtype of wte (and generation 2's value embeddings) on the GPU; with `embedding_location: cpu_rows`, "
        "the dtype of the rows gathered onto the GPU.",
        tuple(DTYPE_BYTES),
    )
    embedding_location: str = _knob(
        "gpu",
        "gpu: wte and generation 2's value embeddings live on the GPU; cpu_rows: they stay in CPU RAM in fp32 "
        "with their fp32 gradients and AdamW moments, each micro-step gathers onto the GPU only the rows its "
        "tokens use and adds those rows' gradients into the fp32 sums in CPU RAM, and their AdamW update runs "
        "on the CPU.",
        ("gpu", "cpu_rows"),
    )
    master_weights: str = _knob(
        "gpu",
        "gpu: the GPU weights are the master copy (fp32, except nanochat's own bf16 wte); cpu: an fp32 master "
        "copy of every parameter in CPU RAM.",
        ("gpu", "cpu"),
    )
    grad_accumulation: str = _knob(
        "gpu",
        "gpu: gradients accumulate in param.grad in the weights' dtype; cpu: each layer's bf16 gradients are "
        "streamed to pinned CPU memory during backward and summed into fp32 accumulators there.",
        ("gpu", "cpu"),
    )
    grad_bucket_layers: int = _knob(
        2, "With cpu accumulation: blocks whose gradients may be on the GPU at once (one copied out, one made)."
    )
    grad_flush_every: int = _knob(
        1,
        "With cpu accumulation: stream gradients to the CPU every this many micro-steps. 1: every micro-step, "
        "fp32 sums throughout; k > 1: k micro-steps accumulate on the GPU in the weights' dtype first (one "
        "gradient per parameter held there), so the CPU sums k times less often.",
    )
    optimizer_location: str = _knob(
        "gpu",
        "Where the optimizer state lives: with the master weights (Newton-Schulz runs on the GPU anyway).",
        ("gpu", "cpu"),
    )
    muon_momentum: str = _knob(
        "full", "full: fp32 Muon momentum per block matrix; 8bit: blockwise-quantised.", ("full", "8bit")
    )
    adamw_state: str = _knob(
        "full",
        "AdamW state of wte and lm_head. full: torch.optim.AdamW (m and v in the updated parameter's dtype); "
        "8bit: bitsandbytes AdamW8bit.",
        ("full", "8bit"),
    )
    paged_optimizer: bool = _knob(
        False,
        "bitsandbytes paged 8-bit AdamW (unified memory that can spill to CPU RAM; CUDA only). The planner still "
        "counts it on the GPU: paging is a safety valve, not a plan.",
    )
    activation_checkpointing: str = _knob(
        "none",
        "none, or block: recompute each block's forward during backward.",
        ("none", "block"),
        set_by="TrainingArguments' activation_checkpointing (true forces block)",
    )
    loss_chunk_size: int = _knob(
        256,
        "Tokens per chunk of the soft-capped cross entropy, so the fp32 sequence x vocab logits are never whole; "
        "0: the whole-sequence loss.",
    )
    weight_cast_copies: bool = _knob(
        False,
        "Eager autocast caches the bf16 cast of every fp32 matmul weight for the whole forward/backward "
        "(+2 bytes per parameter); false: they are re-cast instead, as torch.compile does.",
        set_by="the run itself: bf16 autocast without torch_compile",
    )
    micro_batch: int | None = _knob(
        None,
        "Sequences per micro-step per GPU; null lets the planner choose the largest that fits.",
        set_by="per_device_train_batch_size",
    )

    def __post_init__(self):
        for knob in dataclasses.fields(self):
            allowed = knob.metadata["choices"]
            if allowed and getattr(self, knob.name) not in allowed:
                value = getattr(self, knob.name)
                raise UserInputError(f"memory knob `{knob.name}` must be one of {allowed}, got {value!r}")
        for name, minimum in (("grad_bucket_layers", 1), ("grad_flush_every", 1), ("loss_chunk_size", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                expected = "a positive integer" if minimum else "a number of tokens >= 0 (0: no chunking)"
                raise UserInputError(f"memory knob `{name}` must be {expected}, got {value!r}")
        if self.micro_batch is not None and (
            not isinstance(self.micro_batch, int) or isinstance(self.micro_batch, bool) or self.micro_batch < 1
        ):
            raise UserInputError(
                f"memory knob `micro_batch` must be a positive integer or null, got {self.micro_batch!r}"
            )
        # The quality rules (see the module docstring).
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
        if self.grad_flush_every > 1 and self.grad_accumulation != "cpu":
            raise UserInputError(
                "memory knobs: `grad_flush_every` > 1 only applies to `grad_accumulation: cpu` (gradients "
                "accumulated on the GPU are never streamed)"
            )
        if self.embedding_location == "cpu_rows" and self.master_weights == "cpu":
            raise UserInputError(
                "memory knobs: `embedding_location: cpu_rows` keeps the other weights on the GPU as their own "
                "master; with `master_weights: cpu` every parameter (wte included) is already in CPU RAM, so set "
                "`embedding_location: gpu`"
            )
        if self.grad_accumulation == "cpu" and self.master_weights != "cpu":
            raise UserInputError(
                "memory knobs: `grad_accumulation: cpu` needs `master_weights: cpu` (the optimizer steps on "
                "the CPU copies)"
            )

    @property
    def offloads(self) -> bool:
        return self.master_weights == "cpu"

    def describe(self, accelerator: str = "GPU") -> str:
        """One readable line per knob group, for plan output and logs; `accelerator` names where a run
        keeps what the knobs put "on the GPU" (a CPU run: "CPU")."""
        if self.offloads:
            weights = f"weights {_short(self.weights_dtype)} on the {accelerator}, fp32 master copy in CPU RAM"
            grads = (
                f"gradients streamed layer by layer ({self.grad_bucket_layers}-layer bucket) to pinned CPU RAM "
                "and summed in fp32 there"
                + (
                    f", every {self.grad_flush_every} micro-steps (summed on the GPU in between)"
                    if self.grad_flush_every > 1
                    else ""
                )
            )
        else:
            weights = f"weights {_short(self.weights_dtype)} (wte {_short(self.embedding_dtype)}) on the {accelerator}"
            if self.embedding_location == "cpu_rows":
                weights = (
                    f"weights {_short(self.weights_dtype)} on the {accelerator}; wte and value embeddings fp32 in "
                    f"CPU RAM with their AdamW moments, the rows a micro-step uses gathered in "
                    f"{_short(self.embedding_dtype)}"
                )
            grads = f"gradients accumulated on the {accelerator} in the weights' dtype"
        location = accelerator if self.optimizer_location == "gpu" else self.optimizer_location.upper()
        state = (
            f"optimizer state on the {location}: Muon momentum {self.muon_momentum}, "
            f"AdamW (wte, lm_head) {self.adamw_state}" + (", paged" if self.paged_optimizer else "")
        )
        loss = (
            f"chunked loss ({self.loss_chunk_size} tokens per chunk)"
            if self.loss_chunk_size
            else "whole-sequence loss"
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

# Generation 2 (nanochat 2026) routes its parameters through its own optimizer, which the offloading
# engine of `12gb` / `8gb` above does not drive. Its modes move what is large and sparsely used instead:
# wte and the value embeddings (d24: 654 M of its 1.38 B parameters), of which a micro-batch of B x T
# tokens touches at most B x T rows. `24gb`: those tables in CPU RAM, everything else as `full`;
# `12gb`: the same plus per-block activation checkpointing. There is no generation-2 `8gb` mode.
GENERATION2_MODE_ORDER = ("full", "24gb", "12gb")
GENERATION2_MEMORY_MODES: dict[str, MemoryKnobs] = {
    "full": MEMORY_MODES["full"],
    "24gb": MemoryKnobs(embedding_dtype="bfloat16", embedding_location="cpu_rows", weight_cast_copies=True),
    "12gb": MemoryKnobs(
        embedding_dtype="bfloat16",
        embedding_location="cpu_rows",
        activation_checkpointing="block",
        weight_cast_copies=True,
    ),
}


def mode_order(generation: int = 1) -> tuple[str, ...]:
    """The memory modes a model generation can run, least to most offloading (`auto` takes the first that fits)."""
    return GENERATION2_MODE_ORDER if generation == 2 else MODE_ORDER


KNOB_NAMES = tuple(knob.name for knob in dataclasses.fields(MemoryKnobs))
# The knobs a recipe config sets by name; the others are decided by the run (each says by what: `set_by`).
RECIPE_KNOBS = tuple(knob for knob in dataclasses.fields(MemoryKnobs) if knob.metadata["set_by"] is None)

# Old spellings of the chunked loss, accepted for one release: `chunked_loss: false` is `loss_chunk_size: 0`,
# `loss_chunk_tokens: N` is `loss_chunk_size: N`.
DEPRECATED_KNOBS = {"chunked_loss": False, "loss_chunk_tokens": 0}  # name -> a value of its type


def translate_deprecated_knobs(overrides: dict, where: str = "memory knob") -> dict:
    """`overrides` with the old chunked-loss spellings replaced by `loss_chunk_size` (with a FutureWarning)."""
    overrides = dict(overrides)
    for old in DEPRECATED_KNOBS:
        if old not in overrides:
            continue
        value = overrides.pop(old)
        warnings.warn(
            f"{where} `{old}` is deprecated and will be removed in the next release; use `loss_chunk_size` "
            "(tokens per chunk, 0 for the whole-sequence loss)",
            FutureWarning,
            stacklevel=3,
        )
        if old == "loss_chunk_tokens":
            overrides.setdefault("loss_chunk_size", value)
        elif value is False:
            overrides["loss_chunk_size"] = 0
    return overrides


def knobs_for_mode(mode: str, generation: int = 1, **overrides) -> MemoryKnobs:
    """The knobs of a named mode of a model generation (not `auto`: that needs the planner), with some of
    them overridden."""
    if mode not in MEMORY_MODES:
        raise UserInputError(f"unknown memory mode {mode!r}; expected one of {', '.join(MEMORY_MODE_CHOICES)}")
    presets = GENERATION2_MEMORY_MODES if generation == 2 else MEMORY_MODES
    if mode not in presets:
        raise UserInputError(
            f"memory mode {mode!r} is not available for generation {generation}; it has "
            f"{', '.join(('auto',) + mode_order(generation))}"
        )
    overrides = translate_deprecated_knobs(overrides)
    unknown = sorted(set(overrides) - set(KNOB_NAMES))
    if unknown:
        raise UserInputError(f"unknown memory knob(s) {', '.join(unknown)}; known knobs: {', '.join(KNOB_NAMES)}")
    return dataclasses.replace(presets[mode], **overrides)


def parse_knob_assignment(text: str) -> tuple[str, object]:
    """`name=value` from the command line, with the value converted to the knob's type."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or (name not in KNOB_NAMES and name not in DEPRECATED_KNOBS):
        raise UserInputError(f"--knob expects NAME=VALUE with NAME one of {', '.join(KNOB_NAMES)}; got {text!r}")
    default = DEPRECATED_KNOBS[name] if name in DEPRECATED_KNOBS else getattr(MemoryKnobs(), name)
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
