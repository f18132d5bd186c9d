"""The settings of a pretraining run, and how a recipe reads them from YAML and the command line.

A recipe YAML holds the fields of `PretrainArguments` and `PretrainTrainingArguments` (the Hugging Face
`TrainingArguments` with two changes) side by side, as in trl and alignment-handbook; `TrlParser` fills
both and lets `--key value` on the command line override any of them (`parse_recipe_arguments`).

The memory-knob fields are generated from `planning.memory_modes.MemoryKnobs`, the one list of knobs:
each becomes an optional field with the knob's own help text, unset meaning "the memory mode's value".
"""

import dataclasses
import os
from dataclasses import dataclass, field

import torch
import yaml
from transformers import TrainingArguments
from trl import TrlParser

from ..callbacks.samples import NANOCHAT_SAMPLE_EVERY, NANOCHAT_SAMPLE_PROMPTS
from ..callbacks.val_bpb import NANOCHAT_EVAL_EVERY, NANOCHAT_EVAL_TOKENS
from ..data.pretrain import PACKINGS
from ..defaults import PARAM_DATA_RATIO, SEQUENCE_LEN, TOTAL_BATCH_SIZE, VOCAB_SIZE
from ..errors import UserInputError
from ..planning.memory_modes import MEMORY_MODE_CHOICES, RECIPE_KNOBS, translate_deprecated_knobs
from .sharded_optimizer import ShardedOptimizerArguments
from .validation import check_recipe_settings


def _memory_knob_fields() -> list[tuple]:
    """One optional recipe field per recipe knob of `MemoryKnobs`, help and allowed values included."""
    fields = []
    for knob in RECIPE_KNOBS:
        choices = knob.metadata["choices"]
        help_text = (
            (f"{' | '.join(choices)}. " if choices else "") + knob.metadata["help"] + " Unset: the mode's value."
        )
        fields.append((knob.name, knob.type | None, field(default=None, metadata={"help": help_text})))
    return fields


MemoryKnobArguments = dataclasses.make_dataclass("MemoryKnobArguments", _memory_knob_fields())
MemoryKnobArguments.__module__ = __name__
MemoryKnobArguments.__doc__ = "The memory knobs a recipe config may set one by one (see `planning.memory_modes`)."


PACKING_CHOICES = ("auto",) + PACKINGS


# Settings whose default depends on the generation (None in a config = the generation's value). Generation 2's
# are nanochat 2026's `scripts/base_train.py` defaults; its horizon is counted in scaling parameters
# (matrices + lm_head) and its total batch -1 means "automatic" (see `optim/scaling_gen2.py`).
GENERATION_DEFAULTS = {
    1: {
        "dataset": "karpathy/fineweb-edu-100b-shuffle",
        "tokenizer_vocab_size": VOCAB_SIZE,
        "total_batch_size": TOTAL_BATCH_SIZE,
        "target_param_data_ratio": float(PARAM_DATA_RATIO),
        "embedding_lr": 0.2,
        "unembedding_lr": 0.004,
        "warmdown_ratio": 0.2,
        "final_lr_frac": 0.0,
    },
    2: {
        "dataset": "karpathy/climbmix-400b-shuffle",
        "tokenizer_vocab_size": 32768,
        "total_batch_size": -1,
        "target_param_data_ratio": 12.0,
        "embedding_lr": 0.3,
        "unembedding_lr": 0.008,
        "warmdown_ratio": 0.65,
        "final_lr_frac": 0.05,
        "scalar_lr": 0.5,
        "muon_weight_decay": 0.28,
        "lr_warmup_steps": 40,
    },
}
GENERATION2_ONLY = ("scalar_lr", "muon_weight_decay", "lr_warmup_steps", "window_pattern")


@dataclass
class PretrainArguments(ShardedOptimizerArguments, MemoryKnobArguments):
    """nanochat's base-training settings; unset ones take the generation's defaults (`GENERATION_DEFAULTS`)."""

    # ---- model
    generation: int = field(
        default=1,
        metadata={
            "help": "1: nanochat's released architecture and recipe (d32, 2025). 2: the 2026 architecture (value "
            "embeddings, sliding windows, smear, backout) with its optimizer, schedules and automatic batch."
        },
    )
    depth: int | None = field(default=None, metadata={"help": "Model depth; width and heads follow nanochat's rule."})
    preset: str | None = field(default=None, metadata={"help": "Named size instead of depth: d20, d21, d26, d32."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue from an existing model folder or Hub id instead of a fresh model."}
    )
    sequence_len: int = field(
        default=SEQUENCE_LEN, metadata={"help": "Tokens per training row (at most the model's context)."}
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | eager | flash_attention_2"})
    window_pattern: str | None = field(
        default=None,
        metadata={
            "help": "Generation 2: attention windows per layer, letters S (a quarter of sequence_len, rounded up "
            "to 128) and L (the whole row), tiled over the layers, the last layer always L. Unset: SSSL."
        },
    )

    # ---- tokenizer
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer folder or Hub id. Unset: train one on the dataset (cached in output_dir/tokenizer)."
        },
    )
    tokenizer_vocab_size: int | None = field(
        default=None,
        metadata={"help": "Vocabulary when a tokenizer is trained here: 65,536 (generation 1), 32,768 (2)."},
    )
    tokenizer_max_chars: int = field(
        default=2_000_000_000, metadata={"help": "Characters of training text when a tokenizer is trained here."}
    )

    # ---- data
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset id, local parquet/jsonl/txt file or folder, or 'embedded' (ships with Python). "
            "Unset: karpathy/fineweb-edu-100b-shuffle (generation 1) or karpathy/climbmix-400b-shuffle (2)."
        },
    )

    packing: str = field(
        default="auto",
        metadata={
            "help": "auto | stream | best_fit. stream: rows cut from the document stream (nanochat generation 1); "
            "best_fit: every row starts at a document's BOS, documents placed best-fit (generation 2). "
            "auto: the model generation's own."
        },
    )

    # ---- batch and horizon
    total_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Tokens per optimizer update (all processes). Unset: 524,288 (generation 1), or automatic "
            "from the model size (generation 2: 2^round(log2(2^19 (D/D_d12)^0.383)); -1 also means automatic)."
        },
    )
    target_param_data_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Training tokens per parameter: all parameters, 20 (generation 1); scaling parameters, "
            "12 (generation 2; the GPT-2 speedrun uses 8)."
        },
    )
    target_tokens: int = field(default=0, metadata={"help": "Training tokens (overrides the ratio when > 0)."})

    # ---- optimizer and schedule
    matrix_lr: float = field(default=0.02, metadata={"help": "Muon learning rate for the block matrices."})
    embedding_lr: float | None = field(
        default=None, metadata={"help": "AdamW LR of wte (times (d/768)^-0.5); 0.2 (generation 1), 0.3 (2)."}
    )
    unembedding_lr: float | None = field(
        default=None, metadata={"help": "AdamW LR of lm_head (times (d/768)^-0.5); 0.004 (generation 1), 0.008 (2)."}
    )
    scalar_lr: float | None = field(
        default=None, metadata={"help": "Generation 2: AdamW LR of the per-layer lambdas (0.5)."}
    )
    muon_weight_decay: float | None = field(
        default=None,
        metadata={"help": "Generation 2: Muon weight decay before its batch/horizon scaling (0.28; cosine to 0)."},
    )
    lr_warmup_steps: int | None = field(default=None, metadata={"help": "Generation 2: LR warm-up updates (40)."})
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "Generation 1: fraction of steps of linear LR warm-up."}
    )
    warmdown_ratio: float | None = field(
        default=None, metadata={"help": "Fraction of steps of linear LR warm-down: 0.2 (generation 1), 0.65 (2)."}
    )
    final_lr_frac: float | None = field(
        default=None, metadata={"help": "LR multiplier reached at the last step: 0.0 (generation 1), 0.05 (2)."}
    )

    # ---- memory (the knob fields come from MemoryKnobArguments; `nanochat-hf plan` shows what each mode costs)
    memory_mode: str = field(
        default="auto",
        metadata={
            "help": "auto | full | 24gb | 12gb | 8gb. auto: the least offloading mode the planner fits on the GPU "
            "(full on the CPU). Each knob field overrides one setting of the mode; unset = the mode's value. "
            "Activation checkpointing is TrainingArguments' own `activation_checkpointing` (true forces it on)."
        },
    )
    chunked_loss: bool | None = field(default=None, metadata={"help": "Deprecated: use loss_chunk_size (0 = off)."})
    loss_chunk_tokens: int | None = field(default=None, metadata={"help": "Deprecated: use loss_chunk_size."})
    fp8: bool = field(
        default=False,
        metadata={"help": "FP8 matmuls (torchao float8 through accelerate); needs compute capability >= 8.9."},
    )

    # ---- evaluation, samples, metrics
    eval_every: int = field(
        default=NANOCHAT_EVAL_EVERY, metadata={"help": "Validation bits-per-byte every N steps (0: never)."}
    )
    eval_tokens: int = field(default=NANOCHAT_EVAL_TOKENS, metadata={"help": "Validation tokens per evaluation."})
    core_every: int = field(
        default=0,
        metadata={"help": "CORE every N steps and at the end (0: never; nanochat: 2000). Needs core_bundle."},
    )
    core_bundle: str | None = field(
        default=None, metadata={"help": "DCLM eval bundle for CORE: folder, zip, Hub dataset id, or 'embedded'."}
    )
    core_max_per_task: int = field(default=500, metadata={"help": "CORE examples per task (nanochat: 500)."})
    sample_every: int = field(
        default=NANOCHAT_SAMPLE_EVERY, metadata={"help": "Print greedy samples every N steps (0: never)."}
    )
    sample_prompts: list[str] = field(default_factory=lambda: list(NANOCHAT_SAMPLE_PROMPTS))
    sample_max_new_tokens: int = field(default=16)
    gpu: str | None = field(default=None, metadata={"help": "GPU key for MFU/energy when it cannot be detected."})
    price_per_kwh: float | None = field(default=None, metadata={"help": "Electricity price, to log the cost so far."})
    currency: str = field(default="USD")

    def __post_init__(self):
        if self.generation not in GENERATION_DEFAULTS:
            raise UserInputError(f"--generation must be 1 or 2, got {self.generation!r}")
        if self.generation == 1:
            set_here = [name for name in GENERATION2_ONLY if getattr(self, name) is not None]
            if set_here:
                raise UserInputError(
                    f"{', '.join('--' + name for name in set_here)}: generation 2 settings; this run is generation 1 "
                    "(set --generation 2, or leave them out)"
                )
        for name, value in GENERATION_DEFAULTS[self.generation].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.generation == 2 and self.warmup_ratio:
            raise UserInputError("--warmup_ratio is generation 1's warm-up; generation 2 counts --lr_warmup_steps")
        if self.model_name_or_path is None and self.depth is None and self.preset is None:
            raise UserInputError("set one of --depth, --preset or --model_name_or_path")
        if self.depth is not None and self.preset is not None:
            raise UserInputError(f"--depth ({self.depth}) and --preset ({self.preset}) both set; choose one")
        if self.sequence_len <= 0:
            raise UserInputError(f"--sequence_len must be positive, got {self.sequence_len}")
        if self.packing not in PACKING_CHOICES:
            raise UserInputError(f"--packing must be one of {' | '.join(PACKING_CHOICES)}, got {self.packing!r}")
        if self.memory_mode not in MEMORY_MODE_CHOICES:
            raise UserInputError(
                f"--memory_mode must be one of {', '.join(MEMORY_MODE_CHOICES)}, got {self.memory_mode!r}"
            )
        old = {
            name: getattr(self, name)
            for name in ("chunked_loss", "loss_chunk_tokens")
            if getattr(self, name) is not None
        }
        if old:
            new = translate_deprecated_knobs(old, where="recipe field")
            if self.loss_chunk_size is None and "loss_chunk_size" in new:
                self.loss_chunk_size = new["loss_chunk_size"]
            self.chunked_loss = self.loss_chunk_tokens = None

    def knob_overrides(self) -> dict:
        """The memory knobs this config sets (the others keep the mode's values)."""
        return {knob.name: getattr(self, knob.name) for knob in RECIPE_KNOBS if getattr(self, knob.name) is not None}


@dataclass
class PretrainTrainingArguments(TrainingArguments):
    """`TrainingArguments` with an optional micro-batch and the dry-run switch.

    `per_device_train_batch_size` may be left unset: on a GPU the planner then picks the largest micro-batch
    that fits (elsewhere it is the Trainer's usual 8). `dry_run` lives here because TrainingArguments checks
    the machine as it is built: a GPU config (bf16) is only accepted on a machine without one with `use_cpu`,
    which a dry run, planning only, sets for itself.
    """

    per_device_train_batch_size: int | None = field(
        default=None,
        metadata={"help": "Sequences per micro-step per process. Unset: the planner picks the largest that fits."},
    )
    dry_run: bool = field(default=False, metadata={"help": "Print the resolved settings and the plan, then exit."})

    def __post_init__(self):
        if self.dry_run and not torch.cuda.is_available():
            self.use_cpu = True
        super().__post_init__()


def parse_recipe_arguments(
    dataclass_types, argv: list[str], default_config: str | None = None, refused_by: str | None = None
):
    """The dataclasses of a recipe from `--config file.yaml` (or `default_config`) plus `--key value` overrides.

    `refused_by` prefixes what the dataclasses themselves refuse while they are built (e.g. "GRPO settings")."""
    argv = list(argv)
    if default_config is not None and "--config" not in argv:
        argv = ["--config", default_config, *argv]
    if "--config" in argv:
        position = argv.index("--config")
        config = argv[position + 1] if position + 1 < len(argv) else None
        if config is None or not os.path.isfile(config):
            raise UserInputError(f"--config {config}: no such file (expected a recipe YAML)")
    try:
        parsed = TrlParser(dataclass_types).parse_args_and_config(argv)
    except yaml.YAMLError as err:
        raise UserInputError(f"--config: not valid YAML ({' '.join(str(err).split())})") from None
    except (ValueError, TypeError) as err:  # unknown keys or flags, values TrainingArguments refuses
        if isinstance(err, UserInputError):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        raise UserInputError(f"{refused_by}: {message}" if refused_by else message) from None
    check_recipe_settings(*parsed)
    return parsed


def parse_pretrain_arguments(argv: list[str], default_config: str | None = None):
    """(PretrainArguments, PretrainTrainingArguments) of a pretraining recipe."""
    return parse_recipe_arguments((PretrainArguments, PretrainTrainingArguments), argv, default_config)
