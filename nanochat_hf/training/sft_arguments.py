"""Settings of a chat fine-tuning run (midtraining or SFT) that trl's `SFTConfig` and `ModelConfig` lack.

A recipe YAML holds the fields of the three dataclasses side by side, as alignment-handbook recipes do:
`ChatTrainingArguments` (this file), `trl.SFTConfig` (TrainingArguments + packing, max_length, ...) and
`trl.ModelConfig` (model_name_or_path, dtype, use_peft, lora_*, load_in_4bit, ...).

The two stages follow nanochat generation 1 (`scripts/mid_train.py` and `scripts/chat_sft.py`):

| stage | trained tokens | LRs (x base) | LR multiplier | Muon momentum |
|---|---|---|---|---|
| `mid` | every token | 1.0 | 1, linear to 0 over the last 20 % | 0.85 -> 0.95 over 300 steps |
| `sft` | nanochat's mask (assistant) | 0.02 | 1 - step/steps (linear to 0) | 0.95, constant |

Any of them can be overridden; unset (None) fields take the stage's value.

A generation-2 base model (nanochat 2026) gets nanochat 2026's single stage instead (`scripts/chat_sft.py`,
see `sft_gen2.py`): `stage: sft` only, LRs inherited from pretraining x 0.8, LR 1.0 for the first half and
linear to 0 over the second, Muon momentum 0.85 -> 0.95 over 300 updates, the mixture SmolTalk + MMLU x3 +
GSM8K x4, and the fields marked "generation 2" below. Generation 1 refuses those fields, and generation 2
refuses `stage: mid` and the sharded optimizers, before anything is loaded.
"""

from dataclasses import dataclass, field

from trl import ModelConfig, SFTConfig

from ..errors import UserInputError
from .arguments import parse_recipe_arguments
from .sharded_optimizer import ShardedOptimizerArguments


STAGE_DEFAULTS = {
    "mid": {"init_lr_frac": 1.0, "warmdown_ratio": 0.2, "momentum_warmup_steps": 300, "train_on_all_tokens": True},
    "sft": {"init_lr_frac": 0.02, "warmdown_ratio": 1.0, "momentum_warmup_steps": 0, "train_on_all_tokens": False},
}
OPTIMIZER_CHOICES = ("auto", "nanochat", "trainer")
# Generation 1's base LRs (both stages); generation 2 inherits its own from the pretraining run.
GEN1_BASE_LRS = {"matrix_lr": 0.02, "embedding_lr": 0.2, "unembedding_lr": 0.004}
# Fields only generation 2's recipe reads (None = its default); generation 1 refuses them.
GEN2_ONLY_FIELDS = (
    "warmup_ratio",
    "final_lr_frac",
    "scalar_lr",
    "device_batch_size",
    "total_batch_size",
    "mmlu_epochs",
    "gsm8k_epochs",
    "load_optimizer",
)
# Fields whose unset (None) value each generation fills with its own default.
GENERATION_FILLED_FIELDS = (*STAGE_DEFAULTS["sft"], *GEN1_BASE_LRS, "dataset_mixture")
GEN1_DEFAULT_MIXTURE = ("embedded",)


@dataclass
class ChatTrainingArguments(ShardedOptimizerArguments):
    stage: str = field(default="sft", metadata={"help": "'mid' (midtraining) or 'sft'; sets the defaults below."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id (default: the model's own)."}
    )

    # ---- data
    dataset_mixture: list[str] | None = field(
        default=None,
        metadata={
            "help": "Entries SOURCE[:SPLIT_OR_SIZE][*REPEAT], e.g. gsm8k, smoltalk:train[:10000], identity*2. "
            "Default: embedded (generation 1); smoltalk:train, mmlu*mmlu_epochs, gsm8k*gsm8k_epochs (generation 2)."
        },
    )
    eval_dataset_mixture: list[str] | None = field(default=None, metadata={"help": "Entries for evaluation."})
    mixture_seed: int = field(default=42, metadata={"help": "Shuffle seed of the mixture (nanochat: 42)."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the generated (synthetic) conversations."})
    spelling_words_file: str | None = field(
        default=None, metadata={"help": "Word list for spelling_bee / simple_spelling (e.g. dwyl's words_alpha.txt)."}
    )
    train_on_all_tokens: bool | None = field(
        default=None, metadata={"help": "Targets on every token (mid) or only nanochat's assistant mask (sft)."}
    )

    # ---- optimizer
    optimizer: str = field(
        default="auto",
        metadata={
            "help": "nanochat = Muon+AdamW with nanochat's LRs (full fine-tunes); trainer = the Trainer's `optim` "
            "and `learning_rate` (AdamW, adamw_bnb_8bit, paged_adamw_8bit, ...); auto = nanochat unless use_peft."
        },
    )
    init_lr_frac: float | None = field(default=None, metadata={"help": "Multiplier of nanochat's base LRs."})
    matrix_lr: float | None = field(
        default=None,
        metadata={"help": "Muon LR of the block matrices before init_lr_frac (generation 1: 0.02; 2: pretraining's)."},
    )
    embedding_lr: float | None = field(
        default=None,
        metadata={"help": "AdamW LR of wte before init_lr_frac and (d/768)^-0.5 (gen. 1: 0.2; 2: pretraining's)."},
    )
    unembedding_lr: float | None = field(
        default=None, metadata={"help": "AdamW LR of lm_head, likewise (generation 1: 0.004; 2: pretraining's)."}
    )
    warmdown_ratio: float | None = field(default=None, metadata={"help": "Fraction of steps of linear LR decay."})
    momentum_warmup_steps: int | None = field(
        default=None, metadata={"help": "Muon momentum 0.85 -> 0.95 over this many steps (0: constant 0.95)."}
    )

    # ---- generation 2 only (nanochat 2026's chat_sft.py; None = its default)
    warmup_ratio: float | None = field(default=None, metadata={"help": "Generation 2: LR warm-up fraction (0)."})
    final_lr_frac: float | None = field(
        default=None, metadata={"help": "Generation 2: last LR as a fraction of the initial one (0)."}
    )
    scalar_lr: float | None = field(
        default=None, metadata={"help": "Generation 2: LR of resid/x0 lambdas before init_lr_frac (0.5)."}
    )
    device_batch_size: int | None = field(
        default=None,
        metadata={"help": "Generation 2: rows per process per micro-step (default: the pretraining run's)."},
    )
    total_batch_size: int | None = field(
        default=None, metadata={"help": "Generation 2: tokens per update (default: the pretraining run's)."}
    )
    mmlu_epochs: int | None = field(default=None, metadata={"help": "Generation 2: MMLU repeats in the mixture (3)."})
    gsm8k_epochs: int | None = field(default=None, metadata={"help": "Generation 2: GSM8K repeats (4)."})
    load_optimizer: str | None = field(
        default=None,
        metadata={
            "help": "Generation 2: warm-start the optimizer's moments from a pretraining checkpoint folder (its "
            "optimizer.pt); auto (default) = the newest checkpoint-N beside the base model folder, none = fresh."
        },
    )

    # ---- memory
    loss_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Compute the soft-capped loss this many tokens at a time, never holding the whole float32 "
            "B x T x V logits (d32: ~1.75 GiB per 2048-token row). Needs model code with `loss_chunk_size`."
        },
    )

    def __post_init__(self):
        if self.stage not in STAGE_DEFAULTS:
            raise UserInputError(f"--stage {self.stage!r}: expected one of {sorted(STAGE_DEFAULTS)}")
        if self.optimizer not in OPTIMIZER_CHOICES:
            raise UserInputError(f"--optimizer {self.optimizer!r}: expected one of {OPTIMIZER_CHOICES}")
        if isinstance(self.dataset_mixture, str):
            self.dataset_mixture = [self.dataset_mixture]
        # What the recipe set itself: generation 2 replaces only the rest with its own defaults (`sft_gen2.py`).
        self.explicit_fields = frozenset(
            key for key in (*GENERATION_FILLED_FIELDS, *GEN2_ONLY_FIELDS) if getattr(self, key) is not None
        )
        for key, value in {**STAGE_DEFAULTS[self.stage], **GEN1_BASE_LRS}.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.dataset_mixture is None:
            self.dataset_mixture = list(GEN1_DEFAULT_MIXTURE)
        if self.init_lr_frac <= 0:
            raise UserInputError(f"--init_lr_frac must be positive, got {self.init_lr_frac}")
        if self.loss_chunk_size is not None and self.loss_chunk_size <= 0:
            raise UserInputError(
                f"--loss_chunk_size must be a positive number of tokens (unset: the whole-sequence loss), "
                f"got {self.loss_chunk_size}"
            )
        if self.momentum_warmup_steps < 0:
            raise UserInputError(f"--momentum_warmup_steps must be >= 0, got {self.momentum_warmup_steps}")


def parse_chat_arguments(argv: list[str], default_config: str | None = None):
    """(ChatTrainingArguments, SFTConfig, ModelConfig) from `--config file.yaml` plus `--key value` overrides."""
    return parse_recipe_arguments((ChatTrainingArguments, SFTConfig, ModelConfig), argv, default_config)
