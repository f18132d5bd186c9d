"""`NanoChatTrainerMixin`: what every nanochat training stage adds to its transformers/trl Trainer.

A stage is `class Stage(NanoChatTrainerMixin, SomeTrainer)` (pretraining: `Trainer`; SFT: trl's
`SFTTrainer`; an RL stage: a trl RL trainer). The mixin gives them all:

- nanochat's optimizer and schedule, when the stage passes `optimizer_settings` (generation 1) or
  `gen2_settings` (generation 2: `optim.setup_gen2.build_gen2_training` gives its MuonAdamW with scaled LRs
  and weight decay, and its schedule): Muon (block matrices) +
  AdamW (embedding, head) as ONE `torch.optim.Optimizer`, so the Trainer checkpoints, resumes and wraps
  it like any other, and nanochat's warm-up / constant / warm-down multiplier as a `LambdaLR`. Under FSDP2
  (and DDP with `sharded_optimizer: muon`) it is the sharded Muon (`optim/sharded.py`), its state saved one
  file per process; FSDP1 and DeepSpeed stop with a message unless `sharded_optimizer: adamw` asks for
  the AdamW fallback with its own matrix LR (`sharded_optimizer.py`). Never a silent switch to AdamW.
  Without `optimizer_settings` the Trainer's own optimizer and scheduler are used (`optim`, `lr_scheduler_type`).
- a model card in every saved folder (`model_card_words`, the stage's text; `write_model_card` writes it);
- checkpoints written atomically: the Trainer saves into a hidden staging folder, which is renamed to
  `checkpoint-N` only once every process has written its part, then old checkpoints are rotated away
  one atomic rename at a time (see `checkpoints.py`);
- `save_final`: the final folder written the same way, with the run's settings and trainer state.

Stages override `build_nanochat_optimizer` (e.g. pretraining's memory-mode optimizers), `model_card_words`
and `write_final_files`.
"""

import json
import logging
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import UserInputError
from ..optim import build_optimizer, get_nanochat_schedule
from ..optim.scaling_gen2 import Gen2Settings
from ..optim.setup_gen2 import Gen2Training, build_gen2_training
from .checkpoints import publish, rotate_checkpoints, staging_path
from .model_card import write_model_card
from .sharded_optimizer import ShardedOptimizerCheckpoints, build_stage_optimizer


logger = logging.getLogger(__name__)

TRAINER_STATE_FILENAME = "trainer_state.json"
RUN_SETTINGS_FILENAME = "run_settings.json"


class NanoChatTrainerMixin(ShardedOptimizerCheckpoints):
    def __init__(
        self,
        *args,
        optimizer_settings: dict | None = None,
        schedule_settings: dict | None = None,
        run_settings: dict | None = None,
        gen2_settings: Gen2Settings | None = None,
        gen2_total_batch_size: int | None = None,
        **kwargs,
    ):
        if gen2_settings is not None and optimizer_settings is not None:
            raise ValueError("pass optimizer_settings (generation 1) or gen2_settings (generation 2), not both")
        self.gen2_settings, self.gen2_total_batch_size = gen2_settings, gen2_total_batch_size
        self.gen2_training: Gen2Training | None = None  # built with the optimizer
        self.optimizer_settings = None if optimizer_settings is None else dict(optimizer_settings)
        self.schedule_settings = dict(schedule_settings or {})
        self.run_settings = run_settings
        self._staging_run_dir: str | None = None  # while a checkpoint is being written
        self._staged_checkpoint: tuple[Path, Path] | None = None  # (staged folder, its final name)
        super().__init__(*args, **kwargs)

    # ---- optimizer and schedule

    def build_nanochat_optimizer(self, model):
        """nanochat's Muon + AdamW over `model` (stages may return a memory-saving variant instead)."""
        return build_optimizer(model, **self.optimizer_settings)

    def create_optimizer(self, model=None):
        if self.gen2_settings is not None:
            return self._create_gen2_optimizer(model if model is not None else self.model)
        if self.optimizer_settings is None:
            return super().create_optimizer(model)
        if self.optimizer is not None:
            return self.optimizer
        model = model if model is not None else self.model
        # Sharded layouts: sharded Muon (DDP with sharded_optimizer=muon, FSDP2), or an error, or the AdamW
        # fallback only when asked for (`sharded_optimizer.py`).
        self.optimizer = build_stage_optimizer(self, model, self._build_unsharded_optimizer)
        return self.optimizer

    def _create_gen2_optimizer(self, model):
        if self.optimizer is not None:
            return self.optimizer
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            raise UserInputError(
                "generation 2's Muon needs whole matrices; FSDP/DeepSpeed shard them. Train generation 2 with DDP "
                "(accelerate_configs/multi_gpu.yaml) or on one process"
            )
        self.gen2_training = build_gen2_training(
            model, self.gen2_settings, total_batch_size=self.gen2_total_batch_size
        )
        self.optimizer = self.gen2_training.optimizer
        return self.optimizer

    def _build_unsharded_optimizer(self, model, settings):
        own, self.optimizer_settings = self.optimizer_settings, settings
        try:
            return self.build_nanochat_optimizer(model)
        finally:
            self.optimizer_settings = own

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.gen2_settings is not None:
            if self.lr_scheduler is None:
                optimizer = optimizer if optimizer is not None else self.optimizer
                self.lr_scheduler = self.gen2_training.create_scheduler(optimizer, num_training_steps)
            return self.lr_scheduler
        if self.optimizer_settings is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            self.lr_scheduler = get_nanochat_schedule(optimizer, num_training_steps, **self.schedule_settings)
        return self.lr_scheduler

    # ---- model card

    def model_card_words(self) -> dict:
        """Title, description and usage of this stage's card (keyword arguments of `write_model_card`)."""
        raise NotImplementedError

    def save_model(self, output_dir=None, _internal_call=False):
        # Every checkpoint (and the final folder) is a complete Hub model folder with its model card.
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.run_settings is not None and self.args.should_save:
            write_model_card(
                output_dir or self.args.output_dir,
                settings=self.run_settings,
                log_history=self.state.log_history,
                **self.model_card_words(),
            )

    # ---- atomic checkpoints

    def _get_output_dir(self, trial):
        # While a checkpoint is saved, the Trainer's "run folder" is a hidden staging folder.
        if self._staging_run_dir is not None:
            return self._staging_run_dir
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = staging_path(run_dir / name)
        if self.args.should_save:
            if staging_root.exists():
                shutil.rmtree(staging_root)
            staging_root.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self._staging_run_dir, self._staged_checkpoint = str(staging_root), (staging_root / name, run_dir / name)
        try:
            super()._save_checkpoint(model, trial)  # writes, pushes (see below) and rotates inside staging_root
        finally:
            self._staging_run_dir = None
        self._publish_staged_checkpoint()
        if self.args.should_save:
            rotate_checkpoints(run_dir, self.args.save_total_limit, keep=self.state.best_model_checkpoint)

    def _push_from_checkpoint(self, checkpoint_folder):
        # The Hub upload reads the checkpoint in the background: publish it first, then push its final path.
        published = self._publish_staged_checkpoint()
        return super()._push_from_checkpoint(str(published) if published is not None else checkpoint_folder)

    def _publish_staged_checkpoint(self) -> Path | None:
        """Rename the staged checkpoint into place once every process has written its part."""
        if self._staged_checkpoint is None:
            return None
        staged, final = self._staged_checkpoint
        self._staged_checkpoint = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            if self.state.best_model_checkpoint and Path(self.state.best_model_checkpoint) == staged:
                self.state.best_model_checkpoint = str(final)
                self.state.save_to_json(str(staged / TRAINER_STATE_FILENAME))
            publish(staged, final)
            staged.parent.rmdir()
        self.accelerator.wait_for_everyone()
        return final

    # ---- the final folder

    def write_final_files(self, folder: Path) -> None:
        """Stage-specific files of the final folder, written by the main process before it is published."""

    def save_final(self, final_dir) -> Path:
        """Write the final model (or adapter) folder; it appears under its name only when complete."""
        final_dir = Path(final_dir)
        staging = staging_path(final_dir)
        main = self.args.should_save
        if main and staging.exists():
            shutil.rmtree(staging)
        self.accelerator.wait_for_everyone()
        self.save_model(str(staging))  # every process: FSDP/DeepSpeed gather the weights collectively
        if main:
            self.write_final_files(staging)
            if self.run_settings is not None:
                (staging / RUN_SETTINGS_FILENAME).write_text(json.dumps(self.run_settings, indent=2, default=str))
            self.state.save_to_json(str(staging / TRAINER_STATE_FILENAME))
            publish(staging, final_dir)
        self.accelerator.wait_for_everyone()
        return final_dir
