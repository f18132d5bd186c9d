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
- `save_final`: the final folder written the same way, with the run's settings and trainer state;
- guarded saves (`save_guards.py`): no folder is saved from non-finite weights, free space is checked
  before writing, and a write that fails for lack of space is one line naming the device, the file and the
  last good checkpoint, with the staging folder removed;
- `train_from(resume)`: the resume checks. The checkpoint's `run_settings.json` is compared with this
  run's (another model shape is refused, other changes are warned about), later checkpoints are set aside
  so that the resumed run cannot overwrite them, and a checkpoint already at `max_steps` trains nothing:
  its weights become the final folder.

Stages override `build_nanochat_optimizer` (e.g. pretraining's memory-mode optimizers), `model_card_words`
and `write_final_files`.
"""

import json
import logging
import shutil
from pathlib import Path

from transformers import TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..atomic import is_disk_full
from ..errors import UserInputError
from ..folder_manifest import write_manifest
from ..optim import build_optimizer, get_nanochat_schedule
from ..optim.scaling_gen2 import Gen2Settings
from ..optim.setup_gen2 import Gen2Training, build_gen2_training
from .checkpoints import (
    checkpoints_in,
    folder_size,
    publish,
    rotate_checkpoints,
    set_aside_newer,
    staging_path,
)
from .model_card import write_model_card
from .save_guards import (
    check_finite_weights,
    check_free_space,
    disk_full_error,
    estimated_checkpoint_bytes,
)
from .sharded_optimizer import ShardedOptimizerCheckpoints, build_stage_optimizer


logger = logging.getLogger(__name__)

TRAINER_STATE_FILENAME = "trainer_state.json"
RUN_SETTINGS_FILENAME = "run_settings.json"
# Settings that fix the shape of the weights: a checkpoint cannot be resumed with others.
SHAPE_SETTINGS = ("model.depth", "model.width", "model.heads", "model.vocab_size")
# Settings that describe where a run is, not how it trains.
UNCOMPARED_SETTINGS = ("output_dir", "base_model")


def flatten_settings(settings: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flatten_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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

    def last_good_checkpoint(self, run_dir=None) -> Path | None:
        """The newest checkpoint of this run (published ones are complete)."""
        found = checkpoints_in(Path(run_dir or self.args.output_dir))
        return found[-1] if found else None

    def _save_checkpoint(self, model, trial):
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        last_good = self.last_good_checkpoint(run_dir)
        check_finite_weights(self.model, name, last_good)
        if self.args.should_save:
            needed = folder_size(last_good) if last_good is not None else None
            check_free_space(
                run_dir, needed or estimated_checkpoint_bytes(self.model, self.optimizer), name, last_good
            )
        staging_root = staging_path(run_dir / name)
        try:
            if self.args.should_save:
                if staging_root.exists():
                    shutil.rmtree(staging_root)
                staging_root.mkdir(parents=True)
            self.accelerator.wait_for_everyone()
            self._staging_run_dir = str(staging_root)
            self._staged_checkpoint = (staging_root / name, run_dir / name)
            try:
                super()._save_checkpoint(model, trial)  # writes, pushes (see below) and rotates inside staging_root
            finally:
                self._staging_run_dir = None
            self._publish_staged_checkpoint()
        except Exception as err:
            self._staged_checkpoint = None
            if self.args.should_save:
                shutil.rmtree(staging_root, ignore_errors=True)
            if is_disk_full(err):
                raise disk_full_error(err, staging_root / name, last_good) from err
            raise
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
            if self.run_settings is not None:
                (staged / RUN_SETTINGS_FILENAME).write_text(json.dumps(self.run_settings, indent=2, default=str))
            write_manifest(staged)
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
        last_good = self.last_good_checkpoint(final_dir.parent)
        check_finite_weights(self.model, str(final_dir), last_good)
        if main:
            check_free_space(final_dir.parent, estimated_checkpoint_bytes(self.model), str(final_dir), last_good)
        try:
            if main and staging.exists():
                shutil.rmtree(staging)
            self.accelerator.wait_for_everyone()
            self.save_model(str(staging))  # every process: FSDP/DeepSpeed gather the weights collectively
            if main:
                self.write_final_files(staging)
                if self.run_settings is not None:
                    text = json.dumps(self.run_settings, indent=2, default=str)
                    (staging / RUN_SETTINGS_FILENAME).write_text(text)
                self.state.save_to_json(str(staging / TRAINER_STATE_FILENAME))
                write_manifest(staging)
                publish(staging, final_dir)
        except Exception as err:
            if main:
                shutil.rmtree(staging, ignore_errors=True)
            if is_disk_full(err):
                raise disk_full_error(err, final_dir, last_good) from err
            raise
        self.accelerator.wait_for_everyone()
        return final_dir

    # ---- resuming

    def check_resume_settings(self, resume: Path) -> None:
        """Refuse a checkpoint of another model shape; warn about every other setting that changed."""
        path = Path(resume) / RUN_SETTINGS_FILENAME
        if self.run_settings is None or not path.is_file():
            return
        try:
            saved = flatten_settings(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return
        now = flatten_settings(json.loads(json.dumps(self.run_settings, default=str)))
        changed = {
            key: (saved.get(key), now.get(key))
            for key in sorted(set(saved) | set(now))
            if saved.get(key) != now.get(key) and not key.startswith(UNCOMPARED_SETTINGS)
        }
        shape = {key: values for key, values in changed.items() if key in SHAPE_SETTINGS}
        if shape:
            differences = ", ".join(f"{key.split('.')[-1]} {old} -> {new}" for key, (old, new) in shape.items())
            raise UserInputError(
                f"--resume_from_checkpoint {resume}: the checkpoint is of another model ({differences}); "
                "resume with the depth and tokenizer it was trained with, or start a new --output_dir"
            )
        if changed:
            logger.warning(
                "resuming from %s with changed settings: %s. Learning rates and the other optimizer settings stay "
                "those saved in the checkpoint's optimizer state; the step count and schedule follow this run",
                resume,
                "; ".join(f"{key} {old} -> {new}" for key, (old, new) in changed.items()),
            )

    def train_from(self, resume):
        """`train()`, resuming from `resume` (a complete checkpoint folder, or None for a fresh start)."""
        if resume is None:
            return self.train()
        resume = Path(resume)
        self.check_resume_settings(resume)
        state = TrainerState.load_from_json(str(resume / TRAINER_STATE_FILENAME))
        max_steps = self.args.max_steps
        if max_steps > 0 and state.global_step > max_steps:
            raise UserInputError(
                f"--resume_from_checkpoint {resume}: the checkpoint is at step {state.global_step}, beyond this "
                f"run's max_steps {max_steps}; resume with --max_steps {state.global_step} or more"
            )
        if self.args.should_save:
            set_aside_newer(self.args.output_dir, resume)
        self.accelerator.wait_for_everyone()
        if max_steps > 0 and state.global_step == max_steps:
            logger.warning(
                "%s is at max_steps %d: nothing left to train; its weights become the final folder", resume, max_steps
            )
            self._load_from_checkpoint(str(resume))
            self.state = state
            return None
        return self.train(resume_from_checkpoint=str(resume))
