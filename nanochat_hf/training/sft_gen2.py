"""Chat SFT of a generation-2 base model: nanochat 2026's single stage (`scripts/chat_sft.py`) in `run_sft`.

Generation 1 fine-tunes in two stages (midtraining, then SFT at 0.02 x the LRs). nanochat 2026 has one
stage straight from the base checkpoint:

- **Inherited from pretraining** (the base folder's `run_settings.json`, as nanochat reads its checkpoint's
  meta data): the row length (`max_length` = the model's `sequence_len` unless the recipe gives another
  value than SFTConfig's default 1024), the rows per process per
  micro-step (`device_batch_size`, else 32), the tokens per update (`total_batch_size`, else 524,288) and
  the un-scaled LRs matrix / embedding / unembedding (else 0.02 / 0.3 / 0.004). A field set in the recipe
  wins. The batch-size LR scale of pretraining is not applied (nanochat passes the raw LRs); AdamW LRs
  keep the (d/768)^-0.5 width scale.
- **Schedule**: LRs x `init_lr_frac` 0.8; `warmup_ratio` 0, 1.0 until half-way, then linear to
  `final_lr_frac` 0 over `warmdown_ratio` 0.5 of the updates; Muon momentum 0.85 -> 0.95 over 300 updates;
  Muon weight decay 0; no gradient clipping. One pass over the mixture (the Trainer's one epoch).
- **Mixture**: SmolTalk train, MMLU auxiliary train x `mmlu_epochs` 3, GSM8K main train x `gsm8k_epochs` 4,
  shuffled together; the loss on nanochat's assistant mask. Conversations are best-fit packed into rows.
- **Optimizer**: the generation-2 MuonAdamW (`optim.setup_gen2`, `Gen2Settings.for_sft`), warm-started from
  the pretraining optimizer's moments (`load_optimizer`, nanochat's `--load-optimizer 1`): the newest
  `checkpoint-N/optimizer.pt` beside the base folder, the LRs and schedules staying this run's own
  (`NanoChatGen2MuonAdamW.load_moments`). No checkpoint found: a fresh optimizer and a warning, as nanochat.
"""

import json
import logging
from pathlib import Path

import torch

from ..errors import UserInputError
from ..optim.scaling_gen2 import Gen2Settings, gen2_group_lrs
from .checkpoints import checkpoints_in
from .sft_arguments import GEN2_ONLY_FIELDS, ChatTrainingArguments


logger = logging.getLogger(__name__)

# nanochat 2026 chat_sft.py's own defaults.
GEN2_SFT_DEFAULTS = {
    "init_lr_frac": 0.8,
    "warmup_ratio": 0.0,
    "warmdown_ratio": 0.5,
    "final_lr_frac": 0.0,
    "momentum_warmup_steps": 300,
    "train_on_all_tokens": False,
    "scalar_lr": 0.5,
    "mmlu_epochs": 3,
    "gsm8k_epochs": 4,
    "load_optimizer": "auto",
}
# What chat_sft.py inherits from the pretraining run, and its fallbacks when the run did not record them.
INHERITED_FALLBACKS = {
    "device_batch_size": 32,
    "total_batch_size": 524288,
    "embedding_lr": 0.3,
    "unembedding_lr": 0.004,
    "matrix_lr": 0.02,
}
OPTIMIZER_FILENAME = "optimizer.pt"


def nanochat_2026_mixture(mmlu_epochs: int, gsm8k_epochs: int) -> list[str]:
    """chat_sft.py's training mixture as `dataset_mixture` entries."""
    entries = ["smoltalk:train"]
    if mmlu_epochs:
        entries.append(f"mmlu:train*{mmlu_epochs}")
    if gsm8k_epochs:
        entries.append(f"gsm8k:train*{gsm8k_epochs}")
    return entries


def check_generation_fields(args: ChatTrainingArguments, generation: int, model_location: str) -> None:
    """Refuse the other generation's settings, naming them, before anything large is loaded."""
    explicit = args.explicit_fields
    if generation == 1:
        given = [key for key in GEN2_ONLY_FIELDS if key in explicit]
        if given:
            raise UserInputError(
                f"{model_location} is a generation-1 model; {', '.join('--' + k for k in given)} belong to nanochat "
                "2026's single-stage SFT of generation-2 models. Remove them (generation 1 uses --stage mid, then "
                "--stage sft, with per_device_train_batch_size and gradient_accumulation_steps)"
            )
        return
    if args.stage != "sft":
        raise UserInputError(
            f"--stage {args.stage!r}: {model_location} is a generation-2 model, which nanochat 2026 fine-tunes in "
            "one stage from the base model (--stage sft); midtraining is generation 1's"
        )
    if args.sharded_optimizer not in ("auto", "replicated"):
        raise UserInputError(
            f"--sharded_optimizer {args.sharded_optimizer}: the sharded optimizers are generation 1's; generation 2 "
            "trains on one process or with DDP (replicated state); leave --sharded_optimizer auto"
        )
    if args.mmlu_epochs is not None or args.gsm8k_epochs is not None:
        if "dataset_mixture" in explicit:
            raise UserInputError(
                "--mmlu_epochs/--gsm8k_epochs set the default generation-2 mixture; with --dataset_mixture given, "
                "write the repeats into its entries (mmlu:train*3) instead"
            )
    for key in ("mmlu_epochs", "gsm8k_epochs"):
        value = getattr(args, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise UserInputError(f"--{key} must be a whole number >= 0, got {value!r}")
    for key in ("device_batch_size", "total_batch_size"):
        value = getattr(args, key)
        if value is not None and value <= 0:
            raise UserInputError(f"--{key} must be positive, got {value}")


def pretraining_settings(model_location: str) -> dict:
    """The base folder's `run_settings.json` (written by pretraining), or {} when it has none."""
    path = Path(model_location) / "run_settings.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserInputError(f"{path}: not readable JSON ({err}); remove it or fix it") from err


def inherited_values(pretrained: dict) -> dict:
    """What the pretraining run recorded of the values chat_sft.py inherits (missing ones absent)."""
    batch = pretrained.get("batch", {})
    lrs = pretrained.get("optimizer", {}).get("unscaled_lrs", {})
    values = {
        "device_batch_size": batch.get("micro_batch"),
        "total_batch_size": batch.get("tokens_per_step"),
        **{key: lrs.get(key) for key in ("embedding_lr", "unembedding_lr", "matrix_lr")},
    }
    return {key: value for key, value in values.items() if value is not None}


def settle_gen2_arguments(args: ChatTrainingArguments, model_location: str) -> dict:
    """Fill the fields the recipe left unset with nanochat 2026's values; returns where each inherited one came from."""
    explicit = args.explicit_fields
    for key, value in GEN2_SFT_DEFAULTS.items():
        if key not in explicit:
            setattr(args, key, value)
    recorded = inherited_values(pretraining_settings(model_location))
    sources = {}
    for key, fallback in INHERITED_FALLBACKS.items():
        if key in explicit:
            sources[key] = "recipe"
        elif key in recorded:
            setattr(args, key, recorded[key])
            sources[key] = "pretraining run"
        else:
            setattr(args, key, fallback)
            sources[key] = "nanochat's fallback"
    if "dataset_mixture" not in explicit:
        args.dataset_mixture = nanochat_2026_mixture(args.mmlu_epochs, args.gsm8k_epochs)
    return sources


def gen2_sft_settings(args: ChatTrainingArguments) -> Gen2Settings:
    """The generation-2 optimizer settings of the run (the number of updates is set when training starts)."""
    return Gen2Settings.for_sft(
        matrix_lr=args.matrix_lr,
        embedding_lr=args.embedding_lr,
        unembedding_lr=args.unembedding_lr,
        scalar_lr=args.scalar_lr,
        init_lr_frac=args.init_lr_frac,
        warmup_ratio=args.warmup_ratio,
        warmdown_ratio=args.warmdown_ratio,
        final_lr_frac=args.final_lr_frac,
        momentum_warmup_steps=args.momentum_warmup_steps,
        total_batch_size=args.total_batch_size,
    )


def settle_gen2_batch(args: ChatTrainingArguments, training_args, max_length: int) -> int:
    """Rows per micro-step and accumulation from the total batch, as chat_sft.py; returns the accumulation."""
    per_micro_step = args.device_batch_size * max_length * training_args.world_size
    if args.total_batch_size % per_micro_step:
        raise UserInputError(
            f"--total_batch_size {args.total_batch_size:,} must be a multiple of device_batch_size x max_length x "
            f"processes = {args.device_batch_size} x {max_length} x {training_args.world_size} = {per_micro_step:,}; "
            "set --total_batch_size or --device_batch_size"
        )
    accumulation = args.total_batch_size // per_micro_step
    training_args.per_device_train_batch_size = args.device_batch_size
    training_args.gradient_accumulation_steps = accumulation
    training_args.max_grad_norm = 0.0  # chat_sft.py clips no gradients
    return accumulation


def resolve_base_optimizer(load_optimizer: str, model_location: str) -> Path | None:
    """The pretraining `optimizer.pt` to warm-start from, or None (fresh)."""
    if load_optimizer in ("none", "no", "false", "0"):
        return None
    if load_optimizer == "auto":
        folder = Path(model_location)
        found = checkpoints_in(folder.parent) if folder.is_dir() else []
        found = [c for c in found if (c / OPTIMIZER_FILENAME).is_file()]
        if not found:
            logger.warning(
                "no pretraining checkpoint with %s beside %s: starting with a fresh optimizer (nanochat: slightly "
                "worse); set --load_optimizer CHECKPOINT_FOLDER to warm-start",
                OPTIMIZER_FILENAME,
                model_location,
            )
            return None
        return found[-1] / OPTIMIZER_FILENAME
    path = Path(load_optimizer)
    path = path / OPTIMIZER_FILENAME if path.is_dir() else path
    if not path.is_file():
        raise UserInputError(
            f"--load_optimizer {load_optimizer}: no {OPTIMIZER_FILENAME} there; give a pretraining checkpoint folder "
            "(checkpoint-N), auto, or none"
        )
    return path


def warm_start(optimizer, path: Path) -> None:
    """Load the pretraining optimizer's moments into `optimizer`, keeping its LRs and schedules."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        optimizer.load_moments(state)
    except (ValueError, KeyError) as err:
        raise UserInputError(
            f"--load_optimizer {path}: its parameter groups do not match this model's ({err}); it must come from "
            "the pretraining run of this base model, or use --load_optimizer none"
        ) from err
    logger.info("loaded the optimizer's moments from %s (LRs and schedules are this run's)", path)


def describe_gen2_sft(args: ChatTrainingArguments, model_dim: int, sources: dict, base_optimizer) -> dict:
    """The optimizer section of the run settings: nanochat 2026's values and each group's initial LR."""
    lrs = gen2_group_lrs(
        model_dim,
        matrix_lr=args.matrix_lr,
        embedding_lr=args.embedding_lr,
        unembedding_lr=args.unembedding_lr,
        scalar_lr=args.scalar_lr,
    )
    return {
        "name": "nanochat generation 2 MuonAdamW",
        "init_lr_frac": args.init_lr_frac,
        "unscaled_lrs": {
            key: getattr(args, key) for key in ("matrix_lr", "embedding_lr", "unembedding_lr", "scalar_lr")
        },
        "lr_sources": {key: sources[key] for key in ("matrix_lr", "embedding_lr", "unembedding_lr")},
        **{f"{name}_lr": lr * args.init_lr_frac for name, lr in lrs.items()},
        "warmup_ratio": args.warmup_ratio,
        "warmdown_ratio": args.warmdown_ratio,
        "final_lr_frac": args.final_lr_frac,
        "momentum": f"0.85 -> 0.95 over {args.momentum_warmup_steps} updates",
        "muon_weight_decay": 0.0,
        "max_grad_norm": 0.0,
        "warm_start": str(base_optimizer) if base_optimizer is not None else None,
    }
