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
- Memory knobs (`memory_knobs`, see `training/memory.py`): the model gets its loss chunking, wte dtype and
  activation checkpointing; the optimizer is the offloading engine (`optim/offload.py`) for modes that keep
  the master weights in CPU RAM, `MemoryEfficientMuonAdamW` for 8-bit optimizer state, nanochat's own
  otherwise. The engine is built here, before the Trainer moves the model: it takes exact fp32 masters from
  the fp32 model and puts only the bf16 weights on the GPU. Its gradients never reach `param.grad` on the
  GPU, so gradient clipping and the logged `grad_norm` come from its fp32 sums (clipped once per step).
"""

import logging
import math

import torch
from transformers import Trainer

from ..data.pretrain import build_train_dataloader, consumed_rows, save_data_state
from ..optim import adamw_param_groups_for_fallback, build_optimizer, get_nanochat_schedule
from ..optim.offload import OffloadedMuonAdamW
from .memory import apply_model_knobs, build_memory_optimizer
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
        memory_knobs=None,
        **kwargs,
    ):
        self.optimizer_settings = dict(optimizer_settings or {})
        self.schedule_settings = dict(schedule_settings or {})
        self.run_settings = run_settings
        self.memory_knobs = memory_knobs
        if memory_knobs is not None:
            model = kwargs["model"] if "model" in kwargs else args[0]
            training_args = kwargs["args"] if "args" in kwargs else args[1]
            apply_model_knobs(model, memory_knobs, training_args)
            if memory_knobs.offloads and kwargs.get("optimizers", (None, None))[0] is None:
                engine = build_memory_optimizer(model, memory_knobs, training_args, self.optimizer_settings)
                kwargs["optimizers"] = (engine, kwargs.get("optimizers", (None, None))[1])
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
            if self.memory_knobs is not None:
                self.optimizer = build_memory_optimizer(model, self.memory_knobs, self.args, self.optimizer_settings)
            if self.optimizer is None:
                self.optimizer = build_optimizer(model, **self.optimizer_settings)
        return self.optimizer

    # ---- gradient clipping with the offloading engine (its gradients are fp32 sums in CPU RAM)

    def offload_engine(self) -> OffloadedMuonAdamW | None:
        optimizer = self.optimizer
        while optimizer is not None and not isinstance(optimizer, OffloadedMuonAdamW):
            optimizer = getattr(optimizer, "optimizer", None)  # accelerate's AcceleratedOptimizer wraps it
        return optimizer

    def _clip_grad_norm(self, model):
        engine = self.offload_engine()
        if engine is None:
            return super()._clip_grad_norm(model)
        return engine.clip_grad_norm_(self.args.max_grad_norm)

    def _get_grad_norm(self, model, grad_norm=None):
        engine = self.offload_engine()
        if engine is not None and grad_norm is None:
            grad_norm = engine.grad_norm()
        return super()._get_grad_norm(model, grad_norm=grad_norm)

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
