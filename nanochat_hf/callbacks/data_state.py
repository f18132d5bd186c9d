"""Save the training data position next to every checkpoint, on every rank.

Each rank writes `data_state_rank{r}.json` into `checkpoint-<step>/`: the position of the first row
the trainer has not consumed yet (global_step x gradient_accumulation_steps x per_device_train_batch_size
rows of that rank), so rows prefetched by the DataLoader are read again after a resume, and none is
skipped. Restore with `nanochat_hf.data.load_data_state(dataset, checkpoint_dir)` before
`trainer.train(resume_from_checkpoint=...)`, with `ignore_data_skip=True`. See `nanochat_hf/data/pretrain.py`.

`on_save` runs after the Trainer has written (and possibly pushed or rotated) the checkpoint; a recipe
that writes checkpoints atomically should call `save_data_state` itself before publishing the folder.
"""

import logging
import os

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from nanochat_hf.data.pretrain import consumed_rows, save_data_state


logger = logging.getLogger(__name__)


class DataStateCallback(TrainerCallback):
    """Writes this rank's `data_state_rank{r}.json` into each checkpoint folder the Trainer saves."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_train_begin(self, args, state, control, **kwargs):
        restored = self.dataset.start_rows > 0
        if restored and not args.ignore_data_skip:
            raise ValueError(
                "DataStateCallback: the dataset was restored from a data state, so the Trainer must not also skip "
                "batches; set ignore_data_skip=True"
            )
        if state.global_step > 0 and not restored and args.ignore_data_skip:
            logger.warning(
                "data state: resuming at step %d with ignore_data_skip=True but the dataset starts from the "
                "beginning; call nanochat_hf.data.load_data_state(dataset, checkpoint) first",
                state.global_step,
            )
        rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        if rows_per_step % self.dataset.num_lanes:
            logger.warning(
                "data state: %d rows per step is not a multiple of the %d data lanes, so lanes advance unevenly; "
                "a checkpoint can then only be resumed with the same number of processes",
                rows_per_step,
                self.dataset.num_lanes,
            )

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if not os.path.isdir(folder):
            logger.warning("data state: checkpoint folder %s not found; data position not saved", folder)
            return
        rows = consumed_rows(state.global_step, args.gradient_accumulation_steps, args.per_device_train_batch_size)
        save_data_state(self.dataset, folder, rows)
