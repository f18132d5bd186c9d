"""Tokens per second, model FLOPs utilisation and time to the end of training.

Logged at every Trainer log:

- `tokens_per_second`: tokens of all processes per second of *training* since the last log. A step's
  time runs from the end of the previous step's callbacks, logging, evaluation and checkpointing (the
  last of those events) to the end of its optimizer step, so the next batches' loading counts and
  validation passes or checkpoint writes do not. As in nanochat, a step is
  micro-batch x accumulation x processes x sequence_len tokens.
- `step_seconds`: the mean of those step times.
- `mfu_percent`: flops_per_token x tokens_per_second / (peak x processes) x 100, with nanochat's
  generation-1 FLOPs per token (`nanochat_hf.planning.flops`) and the device's dense BF16 peak from the
  GPU table (`nanochat_hf/planning/gpus.csv`, through `resolve_gpu`). Absent when the peak is unknown -
  on CPU, or on a GPU the table does not list - rather than a made-up number; the reason is logged once.
- `eta_seconds`: remaining steps x the mean wall-clock time per step so far (evaluations included).
- `tokens`: tokens trained on so far (global_step x tokens per step), handy as a plot axis.
"""

import dataclasses
import logging
import time

import torch

from nanochat_hf.callbacks.base import MetricsCallback
from nanochat_hf.planning.flops import ModelShape, flops_per_token
from nanochat_hf.planning.gpus import resolve_gpu


logger = logging.getLogger(__name__)


def model_flops_per_token(model, sequence_len: int) -> int:
    """nanochat's FLOPs per token of `model` at `sequence_len` (either generation): 6 N_matmul + attention."""
    config = model.config
    if all(hasattr(config, name) for name in ("n_layer", "n_embd", "n_head", "n_kv_head", "head_dim")):
        return flops_per_token(dataclasses.replace(ModelShape.from_config(config), sequence_len=sequence_len))
    # Another architecture: the 6N rule over the non-embedding parameters, no attention term.
    return 6 * model.num_parameters(exclude_embeddings=True)


class ThroughputCallback(MetricsCallback):
    """Logs `tokens_per_second`, `step_seconds`, `mfu_percent` (when the peak is known), `eta_seconds`, `tokens`.

    Args:
        sequence_len: tokens per row; defaults to the model config's `sequence_len`.
        flops_per_token: defaults to nanochat's formula for the model (`model_flops_per_token`).
        gpu: the device's key or name in the GPU table (e.g. "rtx4070"), for a card the table cannot
            detect by name; by default the CUDA device is looked up, and on CPU there is no MFU.
        peak_flops_per_device: dense BF16 FLOP/s of one device, overriding the table.
    """

    def __init__(self, sequence_len=None, flops_per_token=None, gpu=None, peak_flops_per_device=None):
        super().__init__()
        self.sequence_len = sequence_len
        self.flops_per_token = flops_per_token
        self.gpu = gpu
        self.peak_flops_per_device = peak_flops_per_device
        self.tokens_per_step = None

    # Any of these events ends a pause in training (callbacks, logging, evaluation, checkpointing);
    # the next step's clock starts at the last one.
    def _mark(self):
        self._last_event = time.perf_counter()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        sequence_len = self.sequence_len or getattr(model.config, "sequence_len", None)
        if sequence_len is None:
            raise ValueError("ThroughputCallback: pass sequence_len (the model config has no `sequence_len`)")
        self.tokens_per_step = (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size * sequence_len
        )
        if self.flops_per_token is None:
            self.flops_per_token = model_flops_per_token(model, sequence_len)
        self.peak_flops = None
        if self.peak_flops_per_device is not None:
            self.peak_flops = self.peak_flops_per_device * args.world_size
        else:
            gpu = resolve_gpu(self.gpu)
            if gpu is not None and gpu.peak_bf16_flops is not None:
                self.peak_flops = gpu.peak_bf16_flops * args.world_size
            elif state.is_world_process_zero:
                device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
                logger.info("MFU: n/a (no dense BF16 peak known for %s; pass gpu= to name the card)", device)
        self._train_start = time.perf_counter()
        self._start_step = state.global_step
        self._interval_seconds, self._interval_steps = 0.0, 0
        self._mark()

    def on_optimizer_step(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the step's kernels are done when we read the clock
        self._interval_seconds += time.perf_counter() - self._last_event
        self._interval_steps += 1

    def on_step_end(self, args, state, control, **kwargs):
        self._mark()

    def on_evaluate(self, args, state, control, **kwargs):
        self._mark()

    def on_save(self, args, state, control, **kwargs):
        self._mark()

    def metrics_for_log(self, args, state) -> dict:
        if self.tokens_per_step is None or self._interval_steps == 0 or self._interval_seconds <= 0:
            return {}
        tokens_per_second = self._interval_steps * self.tokens_per_step / self._interval_seconds
        metrics = {
            "tokens_per_second": tokens_per_second,
            "step_seconds": self._interval_seconds / self._interval_steps,
            "tokens": state.global_step * self.tokens_per_step,
        }
        if self.peak_flops:
            metrics["mfu_percent"] = 100.0 * self.flops_per_token * tokens_per_second / self.peak_flops
        steps_done = state.global_step - self._start_step
        if state.max_steps and steps_done > 0:
            seconds_per_step = (time.perf_counter() - self._train_start) / steps_done
            metrics["eta_seconds"] = max(0, state.max_steps - state.global_step) * seconds_per_step
        self._interval_seconds, self._interval_steps = 0.0, 0
        return metrics

    def on_log(self, args, state, control, logs=None, **kwargs):
        super().on_log(args, state, control, logs=logs, **kwargs)
        self._mark()
