"""The settings of a pretraining run that the Hugging Face `TrainingArguments` do not already have.

A recipe YAML holds the fields of both dataclasses side by side (as in trl and alignment-handbook);
`TrlParser` fills both and lets `--key value` on the command line override any of them.
"""

from dataclasses import dataclass, field


# nanochat's fixed sample prompts (base_train.py), greedy-decoded every `sample_every` steps.
NANOCHAT_SAMPLE_PROMPTS = [
    "The capital of France is",
    "The chemical symbol of gold is",
    "If yesterday was Friday, then tomorrow will be",
    "The opposite of hot is",
    "The planets of the solar system are:",
    "My favorite color is",
    "If 5*x + 3 = 13, then x is",
]


@dataclass
class PretrainArguments:
    """nanochat's base-training settings (generation 1 defaults, nanochat-facts §6.1)."""

    # ---- model
    depth: int | None = field(default=None, metadata={"help": "Model depth; width and heads follow nanochat's rule."})
    preset: str | None = field(default=None, metadata={"help": "Named size instead of depth: d20, d21, d26, d32."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue from an existing model folder or Hub id instead of a fresh model."}
    )
    sequence_len: int = field(default=2048, metadata={"help": "Tokens per training row (context length)."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | eager | flash_attention_2"})

    # ---- tokenizer
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer folder or Hub id. Unset: train one on the dataset (cached in output_dir/tokenizer)."
        },
    )
    tokenizer_vocab_size: int = field(default=65536, metadata={"help": "Vocabulary when a tokenizer is trained here."})
    tokenizer_max_chars: int = field(
        default=2_000_000_000, metadata={"help": "Characters of training text when a tokenizer is trained here."}
    )

    # ---- data
    dataset: str = field(
        default="karpathy/fineweb-edu-100b-shuffle",
        metadata={
            "help": "Hub dataset id, local parquet/jsonl/txt file or folder, or 'embedded' (ships with Python)."
        },
    )

    # ---- batch and horizon
    total_batch_size: int = field(default=524_288, metadata={"help": "Tokens per optimizer update (all processes)."})
    target_param_data_ratio: float = field(default=20.0, metadata={"help": "Training tokens per parameter."})
    target_tokens: int = field(default=0, metadata={"help": "Training tokens (overrides the ratio when > 0)."})

    # ---- optimizer and schedule
    matrix_lr: float = field(default=0.02, metadata={"help": "Muon learning rate for the block matrices."})
    embedding_lr: float = field(default=0.2, metadata={"help": "AdamW learning rate of wte (times (d/768)^-0.5)."})
    unembedding_lr: float = field(
        default=0.004, metadata={"help": "AdamW learning rate of lm_head (times (d/768)^-0.5)."}
    )
    warmup_ratio: float = field(default=0.0, metadata={"help": "Fraction of steps of linear LR warm-up."})
    warmdown_ratio: float = field(default=0.2, metadata={"help": "Fraction of steps of linear LR warm-down."})
    final_lr_frac: float = field(default=0.0, metadata={"help": "LR multiplier reached at the last step."})

    # ---- memory (nanochat_hf/memory_modes.py; `nanochat-hf plan` shows what each mode costs)
    memory_mode: str = field(
        default="auto",
        metadata={
            "help": "auto | full | 24gb | 12gb | 8gb. auto: the least offloading mode the planner fits on the GPU "
            "(full on the CPU). Each knob below overrides one setting of the mode; unset = the mode's value. "
            "Activation checkpointing is TrainingArguments' own `activation_checkpointing` (true forces it on)."
        },
    )
    weights_dtype: str | None = field(
        default=None, metadata={"help": "float32 | bfloat16: matmul weights on the GPU."}
    )
    embedding_dtype: str | None = field(default=None, metadata={"help": "float32 | bfloat16: wte on the GPU."})
    master_weights: str | None = field(default=None, metadata={"help": "gpu | cpu: where the fp32 master lives."})
    grad_accumulation: str | None = field(
        default=None, metadata={"help": "gpu | cpu: cpu streams gradients to fp32 sums in CPU RAM during backward."}
    )
    grad_bucket_layers: int | None = field(
        default=None, metadata={"help": "With cpu accumulation: blocks whose gradients may be on the GPU at once."}
    )
    optimizer_location: str | None = field(default=None, metadata={"help": "gpu | cpu (with the master weights)."})
    muon_momentum: str | None = field(default=None, metadata={"help": "full | 8bit (blockwise-quantised)."})
    adamw_state: str | None = field(
        default=None, metadata={"help": "full | 8bit: bitsandbytes AdamW8bit for wte and lm_head."}
    )
    paged_optimizer: bool | None = field(
        default=None, metadata={"help": "bitsandbytes paged 8-bit AdamW (CUDA only; ignored for CPU state)."}
    )
    chunked_loss: bool | None = field(
        default=None, metadata={"help": "Soft-capped cross entropy in chunks: the fp32 logits are never whole."}
    )
    loss_chunk_tokens: int | None = field(default=None, metadata={"help": "Tokens per loss chunk."})
    fp8: bool = field(
        default=False,
        metadata={"help": "FP8 matmuls (torchao float8 through accelerate); needs compute capability >= 8.9."},
    )
    # Set by `parse_pretrain_arguments` when neither the YAML nor the command line gives
    # `per_device_train_batch_size`: the planner then picks the largest micro-batch that fits the GPU.
    micro_batch_from_planner: bool = field(default=False, init=False, repr=False)

    # ---- evaluation, samples, metrics
    eval_every: int = field(default=250, metadata={"help": "Validation bits-per-byte every N steps (0: never)."})
    eval_tokens: int = field(default=10_485_760, metadata={"help": "Validation tokens per evaluation."})
    core_every: int = field(
        default=0,
        metadata={"help": "CORE every N steps and at the end (0: never; nanochat: 2000). Needs core_bundle."},
    )
    core_bundle: str | None = field(
        default=None, metadata={"help": "DCLM eval bundle for CORE: folder, zip, Hub dataset id, or 'embedded'."}
    )
    core_max_per_task: int = field(default=500, metadata={"help": "CORE examples per task (nanochat: 500)."})
    sample_every: int = field(default=2000, metadata={"help": "Print greedy samples every N steps (0: never)."})
    sample_prompts: list[str] = field(default_factory=lambda: list(NANOCHAT_SAMPLE_PROMPTS))
    sample_max_new_tokens: int = field(default=16)
    gpu: str | None = field(default=None, metadata={"help": "GPU key for MFU/energy when it cannot be detected."})
    price_per_kwh: float | None = field(default=None, metadata={"help": "Electricity price, to log the cost so far."})
    currency: str = field(default="USD")

    # ---- run control
    dry_run: bool = field(default=False, metadata={"help": "Print the resolved settings and exit."})

    def __post_init__(self):
        from ..errors import UserInputError

        if self.model_name_or_path is None and self.depth is None and self.preset is None:
            raise UserInputError("set one of --depth, --preset or --model_name_or_path")
        if self.depth is not None and self.preset is not None:
            raise UserInputError(f"--depth ({self.depth}) and --preset ({self.preset}) both set; choose one")
        if self.sequence_len <= 0:
            raise UserInputError(f"--sequence_len must be positive, got {self.sequence_len}")
        from ..memory_modes import MEMORY_MODE_CHOICES

        if self.memory_mode not in MEMORY_MODE_CHOICES:
            raise UserInputError(
                f"--memory_mode must be one of {', '.join(MEMORY_MODE_CHOICES)}, got {self.memory_mode!r}"
            )
