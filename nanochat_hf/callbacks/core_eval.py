"""CORE during pretraining: a subset of the DCLM bundle every N steps, logged like the other metrics.

nanochat generation 1 evaluates CORE every 2,000 steps on the first 500 examples of each task (after the
bundle's fixed shuffle) and at the last step. The bundle is read, checked and tokenized once, when the
callback is built - a broken bundle stops the run before training starts - and each evaluation only runs
the model: `core_metric` and each task's centered accuracy as `core/<label>` go into the Trainer's logs
(console, `report_to` integrations, trainer_state.json). Every process scores its share of the examples.
"""

import logging

import torch

from nanochat_hf.callbacks.base import MetricsCallback
from nanochat_hf.eval.bundle import EvalBundle, load_bundle
from nanochat_hf.eval.core import bos_token_id, prepare_core, score_core
from nanochat_hf.fp8 import fp8_disabled


logger = logging.getLogger(__name__)

NANOCHAT_CORE_EVERY = 2000
NANOCHAT_CORE_MAX_PER_TASK = 500


class CoreEvalCallback(MetricsCallback):
    """Logs `core_metric` and `core/<label>` every `eval_every` steps and at the last step.

    Args:
        bundle: an `EvalBundle`, or what `load_bundle` accepts (folder, zip, Hub id, "embedded").
        tokenizer: the model's tokenizer.
        eval_every: steps between evaluations (nanochat: 2000).
        max_per_task: examples per task (nanochat: 500; -1 for all).
        batch_size: examples per forward pass.
        core_tasks: only these task labels.
    """

    def __init__(
        self,
        bundle,
        tokenizer,
        eval_every: int = NANOCHAT_CORE_EVERY,
        max_per_task: int = NANOCHAT_CORE_MAX_PER_TASK,
        batch_size: int = 8,
        core_tasks=None,
    ):
        super().__init__()
        if not isinstance(bundle, EvalBundle):
            bundle = load_bundle(bundle, core_tasks)
        self.prepared = prepare_core(bundle, tokenizer, max_per_task)
        self.pad_id = bos_token_id(tokenizer)
        self.eval_every = eval_every
        self.batch_size = batch_size

    def evaluate(self, model, args) -> dict:
        autocast_dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
        # A bar per task on the main process (unless the run disables tqdm): a CORE pass takes minutes.
        with fp8_disabled(model):  # CORE in bf16, as nanochat evaluates an FP8 run
            result = score_core(
                model,
                self.prepared,
                self.pad_id,
                self.batch_size,
                autocast_dtype=autocast_dtype,
                show_progress=not args.disable_tqdm,
            )
        metrics = {"core_metric": result.core_metric}
        metrics.update({f"core/{label}": task.centered for label, task in result.tasks.items()})
        logger.info("step CORE %.4f (%s)", result.core_metric, ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        return metrics

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.eval_every == 0 or state.global_step >= state.max_steps:
            self.publish(self.evaluate(model, args), control)
