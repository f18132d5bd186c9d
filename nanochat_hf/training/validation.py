"""Checks of a recipe's parsed settings that the dataclasses themselves do not make, before any work starts.

Every value is checked by `optim.checks.check_number` (finite, in range, whole where it counts steps), so a
`--matrix_lr nan` or a `--save_steps 0` is refused with one line naming the flag instead of training a model
full of non-finite weights, or saving never. The settings are found by name on whichever dataclasses a
recipe parses (a stage's own arguments, `TrainingArguments`/`SFTConfig`, trl's `ModelConfig`).
"""

from transformers import TrainingArguments

from ..checks import check_number
from ..errors import UserInputError


ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")

# name -> bounds of check_number, for any parsed dataclass that has the field (None values are skipped).
LEARNING_RATES = ("matrix_lr", "embedding_lr", "unembedding_lr", "scalar_lr", "learning_rate")
FRACTIONS = ("warmup_ratio", "warmdown_ratio", "final_lr_frac", "weight_decay")
COUNTS = ("eval_every", "eval_tokens", "core_every", "sample_every", "target_tokens", "momentum_warmup_steps")
POSITIVE_COUNTS = ("core_max_per_task", "sample_max_new_tokens", "tokenizer_vocab_size")


def check_recipe_settings(*parsed) -> None:
    """Raise `UserInputError` naming the flag of the first setting out of range in `parsed`."""
    for settings in parsed:
        for name in LEARNING_RATES:
            _check(settings, name, low=0.0)
        for name in FRACTIONS:
            _check(settings, name, low=0.0, high=1.0)
        for name in COUNTS:
            _check(settings, name, low=0, whole=True)
        for name in POSITIVE_COUNTS:
            _check(settings, name, low=1, whole=True)
        if getattr(settings, "total_batch_size", None) not in (None, -1):  # -1: generation 2's automatic batch
            _check(settings, "total_batch_size", low=1, whole=True)
        _check(settings, "init_lr_frac", low=0.0, low_open=True)
        _check(settings, "target_param_data_ratio", low=0.0, low_open=True)
        _check(settings, "max_grad_norm", low=0.0)
        attention = getattr(settings, "attn_implementation", None)
        if attention is not None and attention not in ATTENTION_IMPLEMENTATIONS:
            raise UserInputError(
                f"--attn_implementation must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}, got {attention!r}"
            )
        if isinstance(settings, TrainingArguments):
            check_training_arguments(settings)


def check_training_arguments(args: TrainingArguments) -> None:
    """The step counts of `TrainingArguments` that it accepts silently but cannot mean."""
    # -1 and 0 both mean "not set" (pretraining then plans the horizon; a stage trains --num_train_epochs).
    check_number("--max_steps", args.max_steps, low=-1, whole=True)
    for name, strategy in (
        ("save_steps", args.save_strategy),
        ("logging_steps", args.logging_strategy),
        ("eval_steps", args.eval_strategy),
    ):
        value = getattr(args, name)
        if str(getattr(strategy, "value", strategy)) == "steps" and value is not None:
            check_number(f"--{name}", value, low=0.0, low_open=True)
    check_number("--num_train_epochs", args.num_train_epochs, low=0.0, low_open=True)
    check_number("--gradient_accumulation_steps", args.gradient_accumulation_steps, low=1, whole=True)
    if args.per_device_train_batch_size is not None:
        check_number("--per_device_train_batch_size", args.per_device_train_batch_size, low=1, whole=True)
    if args.save_total_limit is not None:
        check_number("--save_total_limit", args.save_total_limit, low=1, whole=True)


def _check(settings, name: str, **bounds) -> None:
    value = getattr(settings, name, None)
    if value is not None:
        check_number(f"--{name}", value, **bounds)
