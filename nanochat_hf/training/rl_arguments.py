"""Settings of an RL run (nanochat's `chat_rl`) on top of trl's `GRPOConfig` and `ModelConfig`.

A recipe YAML holds the fields of three dataclasses side by side: `RLArguments` (this file),
`NanoChatGRPOConfig` (trl's `GRPOConfig` with nanochat's defaults) and `trl.ModelConfig`.

nanochat's RL is on-policy REINFORCE with a group-mean baseline, which is GRPO with these settings
(the defaults of `NanoChatGRPOConfig`):

| nanochat | value | GRPOConfig field |
|---|---|---|
| samples per question | 16 | `num_generations` |
| max new tokens (sampled + forced tool output) | 256 | `max_completion_length` |
| temperature, top-k | 1.0, 50 | `temperature`, `top_k` |
| advantage r - mean(r), no std division | | `scale_rewards: none` |
| no KL term, no reference model | | `beta: 0.0` |
| one update per batch of samples (ratio 1, no clipping in effect) | | `num_iterations: 1` |
| token-level mean over a pass of sequences | 8 per pass | `loss_type: bnpo`, `per_device_train_batch_size: 8` |
| questions per optimizer step | 16 | `examples_per_step` (sets `gradient_accumulation_steps`) |

and, in `RLArguments`: nanochat's Muon + AdamW at 0.05 x the base LRs with the multiplier 1 - step/steps (`init_lr_frac`, `warmdown_ratio` 1.0, constant
Muon momentum 0.95).
"""

import os
from dataclasses import dataclass, field

from trl import GRPOConfig, ModelConfig

from ..errors import UserInputError
from .arguments import parse_recipe_arguments


OPTIMIZER_CHOICES = ("auto", "nanochat", "trainer")


def launcher_processes() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def accumulation_for(examples_per_step: int, num_generations: int, per_device_batch: int, processes: int) -> int:
    """Micro-steps per optimizer step so that one step holds `examples_per_step` questions' samples."""
    samples, per_pass = examples_per_step * num_generations, per_device_batch * processes
    if samples % per_pass:
        raise UserInputError(
            f"--examples_per_step {examples_per_step} x --num_generations {num_generations} = {samples} samples "
            f"per step is not a multiple of --per_device_train_batch_size {per_device_batch} x {processes} processes"
        )
    return samples // per_pass


@dataclass
class NanoChatGRPOConfig(GRPOConfig):
    """trl's GRPOConfig with nanochat's RL settings as the defaults (every GRPO knob stays available)."""

    num_generations: int | None = field(default=16, metadata={"help": "Samples per question (nanochat: 16)."})
    max_completion_length: int | None = field(
        default=256, metadata={"help": "Tokens per sample, forced tool output included (nanochat: 256)."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (nanochat: 1.0)."})
    top_k: int = field(default=50, metadata={"help": "Top-k sampling, 0 = off (nanochat: 50)."})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient; nanochat has no KL term (0.0)."})
    scale_rewards: str = field(
        default="none", metadata={"help": "nanochat's advantage is r - mean(r) without std scaling: 'none'."}
    )
    loss_type: str = field(
        default="bnpo", metadata={"help": "bnpo = token-level mean per pass of sequences, as nanochat."}
    )
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Sequences per forward/backward pass (nanochat's device_batch_size 8)."}
    )
    learning_rate: float = field(
        default=1e-5, metadata={"help": "Only with --optimizer trainer (LoRA/QLoRA); nanochat's LRs otherwise."}
    )
    lr_scheduler_type: str = field(default="linear", metadata={"help": "Only with --optimizer trainer."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Only with --optimizer trainer."})
    examples_per_step: int = field(
        default=16,
        metadata={
            "help": "Questions per optimizer step (nanochat: 16); sets gradient_accumulation_steps to "
            "examples_per_step x num_generations / (per_device_train_batch_size x processes). 0: keep "
            "gradient_accumulation_steps (or generation_batch_size / steps_per_generation) as given."
        },
    )

    def __post_init__(self):
        # Before GRPOConfig derives its generation batch from the accumulation (and checks it), so that the
        # batch is set in questions. The process count is the launcher's (accelerate / torchrun set WORLD_SIZE).
        if self.examples_per_step < 0:
            raise UserInputError(f"--examples_per_step must be >= 0 (0: off), got {self.examples_per_step}")
        if self.examples_per_step and self.num_generations:
            if self.generation_batch_size is not None or self.steps_per_generation is not None:
                raise UserInputError(
                    "--examples_per_step sets the batch; with --generation_batch_size or --steps_per_generation "
                    "set --examples_per_step 0"
                )
            self.gradient_accumulation_steps = accumulation_for(
                self.examples_per_step, self.num_generations, self.per_device_train_batch_size, launcher_processes()
            )
        super().__post_init__()


@dataclass
class RLArguments:
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id (default: the model's own)."}
    )

    # ---- data
    dataset: str = field(
        default="gsm8k",
        metadata={
            "help": "gsm8k (the Hub's openai/gsm8k main), a Hub dataset id with question/answer columns, a local "
            ".jsonl/.json/.parquet file with question/answer rows, or 'arithmetic' (the embedded synthetic set)."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of a Hub dataset (slices allowed)."})
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Held-out problems, same forms as --dataset (gsm8k: its test split)."}
    )
    eval_dataset_split: str = field(default="test", metadata={"help": "Split of a Hub eval dataset."})
    eval_size: int = field(default=400, metadata={"help": "Held-out questions per evaluation (nanochat: 400)."})
    synthetic_size: int = field(default=1000, metadata={"help": "Problems of the embedded arithmetic set."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the embedded arithmetic set."})

    # ---- rewards
    format_reward_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of a reward for ending with '#### <number>' whatever the number (0: off)."},
    )

    # ---- optimizer
    optimizer: str = field(
        default="auto",
        metadata={"help": "nanochat = Muon+AdamW (full RL); trainer = --optim/--learning_rate; auto: by use_peft."},
    )
    init_lr_frac: float = field(default=0.05, metadata={"help": "Multiplier of nanochat's base LRs (nanochat: 0.05)."})
    matrix_lr: float = field(default=0.02, metadata={"help": "Muon LR of the block matrices before init_lr_frac."})
    embedding_lr: float = field(default=0.2, metadata={"help": "AdamW LR of wte before init_lr_frac."})
    unembedding_lr: float = field(default=0.004, metadata={"help": "AdamW LR of lm_head before init_lr_frac."})
    warmdown_ratio: float = field(default=1.0, metadata={"help": "LR x (1 - step/steps) over this last fraction."})

    def __post_init__(self):
        if self.optimizer not in OPTIMIZER_CHOICES:
            raise UserInputError(f"--optimizer {self.optimizer!r}: expected one of {OPTIMIZER_CHOICES}")
        if self.init_lr_frac <= 0:
            raise UserInputError(f"--init_lr_frac must be positive, got {self.init_lr_frac}")
        if self.format_reward_weight < 0:
            raise UserInputError(f"--format_reward_weight must be >= 0, got {self.format_reward_weight}")
        if self.eval_size <= 0 or self.synthetic_size <= 0:
            raise UserInputError("--eval_size and --synthetic_size must be positive")


def parse_rl_arguments(argv: list[str], default_config: str | None = None):
    """(RLArguments, NanoChatGRPOConfig, ModelConfig) from `--config file.yaml` plus `--key value` overrides."""
    # GRPOConfig checks its batch arithmetic while it is built: its refusals are named as such.
    return parse_recipe_arguments(
        (RLArguments, NanoChatGRPOConfig, ModelConfig), argv, default_config, refused_by="GRPO settings"
    )
