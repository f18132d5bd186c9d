"""`NanoChatPretrainer`: the transformers `Trainer` with nanochat's optimizer, schedule and data stream.

What it changes, and why:
- Optimizer: nanochat's Muon (block matrices) + AdamW (embedding, head) as ONE `torch.optim.Optimizer`,
  so the Trainer checkpoints, resumes and wraps it like any other. Under FSDP or DeepSpeed the
  parameters are flattened shards and Muon's whole-matrix orthogonalisation is impossible, so every
  parameter falls back to AdamW with the same routing and learning rates.
- Schedule: nanochat's warm-up / constant / warm-down multiplier as a `LambdaLR` over each group's LR.
- Data: the training set is a self-sharding, resumable stream (`PretrainDataset`); the Trainer gets a
  plain DataLoader over it (accelerate would otherwise re-shard or dispatch it), and every rank writes its
  data position into each checkpoint *before* the checkpoint is complete (so a resume reads no data twice
  and skips none, without replaying batches: `ignore_data_skip=True`).
- Safety: a non-finite loss stops the run at once, before anything is saved over the last good checkpoint.
"""

import logging
import math

import torch
from transformers import Trainer

from ..data.pretrain import build_train_dataloader, consumed_rows, save_data_state
from ..optim import adamw_param_groups_for_fallback, build_optimizer, get_nanochat_schedule
from .model_card import write_model_card


logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    pass


class NanoChatPretrainer(Trainer):
    def __init__(
        self,
        *args,
        optimizer_settings: dict | None = None,
        schedule_settings: dict | None = None,
        run_settings: dict | None = None,
        **kwargs,
    ):
        self.optimizer_settings = dict(optimizer_settings or {})
        self.schedule_settings = dict(schedule_settings or {})
        self.run_settings = run_settings
        super().__init__(*args, **kwargs)

    # ---- optimizer and schedule

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        model = model if model is not None else self.model
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            logger.warning(
                "FSDP/DeepSpeed shard parameters, so Muon cannot see whole matrices: using AdamW for every "
                "parameter (nanochat's embedding/head learning rates; matrix_lr=%s for the blocks)",
                self.optimizer_settings.get("matrix_lr"),
            )
            lrs = {k: v for k, v in self.optimizer_settings.items() if k.endswith("_lr")}
            groups = adamw_param_groups_for_fallback(model, **lrs)
            self.optimizer = torch.optim.AdamW(groups)
        else:
            self.optimizer = build_optimizer(model, **self.optimizer_settings)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = get_nanochat_schedule(
                optimizer if optimizer is not None else self.optimizer, num_training_steps, **self.schedule_settings
            )
        return self.lr_scheduler

    # ---- data

    def get_train_dataloader(self):
        return build_train_dataloader(
            self.train_dataset,
            batch_size=self.args.per_device_train_batch_size,
            pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available(),
        )

    def _save_rng_state(self, output_dir):
        # Runs on every rank inside `_save_checkpoint`, before trainer_state.json marks the checkpoint as
        # complete and before older checkpoints are rotated away: the right place for per-rank data state.
        super()._save_rng_state(output_dir)
        rows = consumed_rows(
            self.state.global_step, self.args.gradient_accumulation_steps, self.args.per_device_train_batch_size
        )
        save_data_state(self.train_dataset, output_dir, rows)

    def save_model(self, output_dir=None, _internal_call=False):
        # Every checkpoint (and the final folder) is a complete Hub model folder: weights, config with
        # auto_map and code, tokenizer, generation config, and a model card with the run's settings.
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.run_settings is not None and self.args.should_save:
            write_model_card(
                output_dir or self.args.output_dir,
                self.run_settings,
                self.state.log_history,
                step=self.state.global_step,
                max_steps=self.state.max_steps,
            )

    # ---- safety

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not math.isfinite(loss.item()):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at step {self.state.global_step + 1}; stopping without saving. "
                f"The last good checkpoint in {self.args.output_dir} is untouched; lower the learning rates or "
                "check the data, then resume from it"
            )
        return loss
