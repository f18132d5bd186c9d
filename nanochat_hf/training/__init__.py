"""Every training stage through a transformers/trl Trainer: pretraining and chat fine-tuning (SFT).

- `stage`: `NanoChatTrainerMixin`, shared by every stage: nanochat's optimizer and schedule (with the
  sharded Muon, explicit AdamW fallback), model cards, atomic checkpoints and the atomic final folder.
- `checkpoints`: complete-or-absent folders, the resume resolver, rotation, tidying after a kill.
- `model_card`: the one model-card writer.
- `arguments` / `pretrain` / `pretrain_trainer` / `memory`: pretraining (recipe, Trainer, memory modes).
- `sft_arguments` / `sft`: midtraining and SFT with trl's `SFTTrainer`, LoRA and QLoRA.
"""

from .arguments import PretrainArguments, PretrainTrainingArguments, parse_pretrain_arguments
from .checkpoints import last_good_checkpoint, resolve_resume_checkpoint
from .pretrain import run_pretraining
from .pretrain_trainer import NanoChatPretrainer, NonFiniteLossError
from .stage import NanoChatTrainerMixin


__all__ = [
    "NanoChatPretrainer",
    "NanoChatTrainerMixin",
    "NonFiniteLossError",
    "PretrainArguments",
    "PretrainTrainingArguments",
    "last_good_checkpoint",
    "parse_pretrain_arguments",
    "resolve_resume_checkpoint",
    "run_pretraining",
]
