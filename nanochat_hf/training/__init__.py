"""Pretraining through the transformers Trainer: arguments, trainer, checkpoints, the recipe itself."""

from .arguments import NANOCHAT_SAMPLE_PROMPTS, PretrainArguments
from .checkpoints import last_good_checkpoint, resolve_resume_checkpoint
from .trainer import NanoChatPretrainer, NonFiniteLossError


__all__ = [
    "NANOCHAT_SAMPLE_PROMPTS",
    "NanoChatPretrainer",
    "NonFiniteLossError",
    "PretrainArguments",
    "last_good_checkpoint",
    "resolve_resume_checkpoint",
]
