"""Trainer callbacks for pretraining: throughput/MFU/ETA, validation bpb, CORE, samples, energy.

Each is a `transformers.TrainerCallback` usable on its own. The metric callbacks add their values to the
Trainer's logs, so the console printer and every `report_to` integration (TensorBoard, W&B, trackio)
receive them; add them with `add_metric_callbacks(trainer, ...)`, which places them ahead of those
(see `base.py` for why the order matters).
"""

from .base import MetricsCallback, add_metric_callbacks
from .core_eval import CoreEvalCallback
from .energy import EnergyCallback
from .samples import NANOCHAT_SAMPLE_PROMPTS, SampleCallback, greedy_completions, samples_markdown
from .throughput import ThroughputCallback, model_flops_per_token
from .val_bpb import ValBpbCallback, bits_per_byte, bpb_sums


__all__ = [
    "CoreEvalCallback",
    "EnergyCallback",
    "MetricsCallback",
    "NANOCHAT_SAMPLE_PROMPTS",
    "SampleCallback",
    "ThroughputCallback",
    "ValBpbCallback",
    "add_metric_callbacks",
    "bits_per_byte",
    "bpb_sums",
    "greedy_completions",
    "samples_markdown",
    "model_flops_per_token",
]
