"""`NanoChatPretrainer`: the transformers `Trainer` with nanochat's optimizer, schedule and data stream.

On top of the shared stage plumbing (`stage.py`: nanochat's optimizer and schedule, model cards, atomic
checkpoints and final folder), pretraining changes:
- Data: the training set is a self-sharding, resumable stream (`PretrainDataset`); the Trainer gets a
  plain DataLoader over it (accelerate would otherwise re-shard or dispatch it), and every rank writes its
  data position into each checkpoint *before* the checkpoint is complete (so a resume reads no data twice
  and skips none, without replaying batches: `ignore_data_skip=True`).
- Safety: a non-finite loss stops the run at once, before anything is saved over the last good checkpoint.
- Epochs: the stream is one epoch of `max_steps` steps, so the logged epoch is `global_step / max_steps`
  (the Trainer would count only the steps since a resume, as it replays no batches).
- Memory knobs (`memory_knobs`, see `training/memory.py`): the model gets its loss chunking and wte dtype
  (or, with `embedding_location: cpu_rows`, its wte and value embeddings placed in CPU RAM, before the
  Trainer moves the model and builds the optimizer);
  the optimizer is the offloading engine (`optim/offload.py`) for modes that keep the master weights in CPU
  RAM, `MemoryEfficientMuonAdamW` for 8-bit optimizer state, nanochat's own otherwise. The engine is built
  here, before the Trainer moves the model: it takes exact fp32 masters from the fp32 model and puts only
  the bf16 weights on the GPU. Its gradients never reach `param.grad` on the GPU, so gradient clipping and
  the logged `grad_norm` come from its fp32 sums (clipped once per step).
"""

import logging
import math

import torch
from transformers import Trainer, TrainerCallback

from ..data.pretrain import DATA_STATE_FILENAME, build_train_dataloader, consumed_rows, save_data_state
from ..errors import RunStoppedError, UserInputError
from ..optim.offload import OffloadedMuonAdamW
from .memory import apply_model_knobs, build_memory_optimizer, check_embedding_location
from .model_card import base_model_card
from .sharded_optimizer import DISTRIBUTION_KEYS
from .stage import NanoChatTrainerMixin


logger = logging.getLogger(__name__)

# Besides the Trainer's own files, a pretraining checkpoint holds the data position (rank 0's at least).
CHECKPOINT_FILES = (DATA_STATE_FILENAME.format(rank=0),)


class NonFiniteLossError(RunStoppedError):
    pass


class StreamEpochCallback(TrainerCallback):
    """The epoch of a run over the one-epoch stream, counted from step 0 also after a resume."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps > 0:
            state.epoch = state.global_step / state.max_steps


class NanoChatPretrainer(NanoChatTrainerMixin, Trainer):
    def __init__(self, *args, optimizer_settings: dict | None = None, memory_knobs=None, **kwargs):
        self.memory_knobs = memory_knobs
        if memory_knobs is not None:
            model = kwargs["model"] if "model" in kwargs else args[0]
            training_args = kwargs["args"] if "args" in kwargs else args[1]
            generation = getattr(getattr(model, "config", None), "generation", 1)
            check_embedding_location(memory_knobs, generation, training_args.world_size)
            apply_model_knobs(model, memory_knobs, training_args.device.type)
            choice = (optimizer_settings or {}).get("sharded_optimizer") or "auto"
            if memory_knobs.offloads and choice not in ("auto", "replicated"):
                raise UserInputError(
                    f"sharded_optimizer {choice} cannot combine with an offloading memory mode (its engine keeps "
                    "the optimizer state in CPU RAM itself): use memory_mode full, or sharded_optimizer auto"
                )
            if memory_knobs.offloads and kwargs.get("optimizers", (None, None))[0] is None:
                settings = {k: v for k, v in (optimizer_settings or {}).items() if k not in DISTRIBUTION_KEYS}
                engine = build_memory_optimizer(model, memory_knobs, training_args, settings)
                kwargs["optimizers"] = (engine, kwargs.get("optimizers", (None, None))[1])
        if kwargs.get("gen2_settings") is None:
            kwargs["optimizer_settings"] = dict(optimizer_settings or {})
        super().__init__(*args, **kwargs)
        self.add_callback(StreamEpochCallback())

    def build_nanochat_optimizer(self, model):
        if self.memory_knobs is not None:
            optimizer = build_memory_optimizer(model, self.memory_knobs, self.args, self.optimizer_settings)
            if optimizer is not None:
                return optimizer
        return super().build_nanochat_optimizer(model)

    def model_card_words(self) -> dict:
        return base_model_card(self.run_settings, step=self.state.global_step, max_steps=self.state.max_steps)

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

    # ---- data

    def get_train_dataloader(self):
        dataset, args = self.train_dataset, self.args
        if dataset.start_rows > 0 and not args.ignore_data_skip:
            raise UserInputError(
                "the training data was restored from a checkpoint's data position, so the Trainer must not also "
                "skip batches (it would skip them twice); set ignore_data_skip=True"
            )
        rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        if rows_per_step % dataset.num_lanes:
            logger.warning(
                "data: %d rows per step is not a multiple of the %d data lanes, so lanes advance unevenly; "
                "a checkpoint can then only be resumed with the same number of processes",
                rows_per_step,
                dataset.num_lanes,
            )
        return build_train_dataloader(
            dataset,
            batch_size=args.per_device_train_batch_size,
            pin_memory=args.dataloader_pin_memory and torch.cuda.is_available(),
        )

    def _save_rng_state(self, output_dir):
        # Runs on every rank inside `_save_checkpoint`, before trainer_state.json is written and before the
        # staged checkpoint is published: the right place for per-rank data state.
        super()._save_rng_state(output_dir)
        rows = consumed_rows(
            self.state.global_step, self.args.gradient_accumulation_steps, self.args.per_device_train_batch_size
        )
        save_data_state(self.train_dataset, output_dir, rows)

    # ---- safety

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not math.isfinite(loss.item()):
            last_good = self.last_good_checkpoint()
            where = f"the last good checkpoint {last_good} is intact" if last_good else "no checkpoint was saved yet"
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at step {self.state.global_step + 1}; stopped without saving; "
                f"{where}. Lower the learning rates or check the data, then resume"
            )
        return loss
