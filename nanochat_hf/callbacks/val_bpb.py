"""Validation bits per byte during training, as nanochat measures it.

bpb = sum of cross-entropy (nats) / (ln 2 x sum of token_bytes[target]), both sums over the targets
whose byte length is > 0 (special tokens such as BOS count 0 bytes and are left out of both). It does
not depend on the tokenizer's vocabulary, so runs with different tokenizers compare. The CE uses the
model's fp32, soft-capped logits; the sums are all-reduced over processes before dividing.

nanochat generation 1 evaluates every 250 steps on 20 x 524,288 = 10,485,760 validation tokens
(nanochat's eval_tokens = 20 x 524,288), split over the processes, on a validation stream rebuilt from its start each time.
`token_bytes` comes from `nanochat_hf.tokenizer.token_bytes` (`compute_token_bytes` or the
`token_bytes.pt` saved next to the tokenizer).
"""

import contextlib
import itertools
import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nanochat_hf.callbacks.base import MetricsCallback
from nanochat_hf.defaults import TOTAL_BATCH_SIZE
from nanochat_hf.fp8 import fp8_disabled


NANOCHAT_EVAL_EVERY = 250
NANOCHAT_EVAL_TOKENS = 20 * TOTAL_BATCH_SIZE


@torch.no_grad()
def bpb_sums(model, batches, token_bytes: torch.Tensor, autocast_dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of CE nats (float64) and sum of bytes (int64) over every target of `batches` with byte length > 0.

    Both are 0-d tensors on the model's device, ready for an all-reduce.

    Each batch is a dict with `input_ids` and `shift_labels` (the next-token targets, as
    `nanochat_hf.data.PretrainDataset` yields them); targets of -100 are skipped.
    """
    device = next(model.parameters()).device
    token_bytes = token_bytes.to(device)
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    for batch in batches:
        input_ids = batch["input_ids"].to(device)
        targets = batch["shift_labels"].to(device)
        with autocast:
            logits = model(input_ids=input_ids).logits
        valid = targets != -100
        safe_targets = targets.clamp(min=0)
        nats = F.cross_entropy(logits.float().flatten(0, 1), safe_targets.flatten(), reduction="none")
        num_bytes = torch.where(valid, token_bytes[safe_targets], 0).flatten()
        counted = num_bytes > 0
        total_nats += nats[counted].sum(dtype=torch.float64)
        total_bytes += num_bytes.sum()
    return total_nats, total_bytes


def bits_per_byte(total_nats, total_bytes) -> float:
    total_nats, total_bytes = float(total_nats), int(total_bytes)
    return float("inf") if total_bytes == 0 else total_nats / (math.log(2) * total_bytes)


def _batched(rows, batch_size: int):
    while True:
        chunk = list(itertools.islice(rows, batch_size))
        if not chunk:
            return
        yield {key: torch.stack([row[key] for row in chunk]) for key in ("input_ids", "shift_labels")}


def evaluate_bpb(
    model, dataset, token_bytes, eval_tokens: int, batch_size: int, autocast_dtype=None, show_progress: bool = False
) -> float:
    """bpb over the first rows of `dataset` (this process's share of `eval_tokens`), summed over processes.

    `dataset` yields dicts with `input_ids` and `shift_labels` (e.g. this rank's validation
    `PretrainDataset`); it is iterated from its start, so every call sees the same rows. With
    `show_progress`, a bar counts the batches (pass it on one process only).
    """
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    world_size = torch.distributed.get_world_size() if distributed else 1
    stream = iter(dataset)
    first = next(stream)
    sequence_len = first["input_ids"].numel()
    rows_per_process = max(1, math.ceil(eval_tokens / (sequence_len * world_size)))
    rows = itertools.chain([first], itertools.islice(stream, rows_per_process - 1))
    batches = tqdm(
        _batched(rows, batch_size),
        total=math.ceil(rows_per_process / batch_size),
        desc="val bpb",
        unit="batch",
        leave=False,
        disable=not show_progress,
    )
    was_training = model.training
    model.eval()
    try:
        total_nats, total_bytes = bpb_sums(model, batches, torch.as_tensor(token_bytes), autocast_dtype)
    finally:
        batches.close()
        model.train(was_training)
    if distributed:
        # float64 sums travel as they are (gloo and NCCL both reduce float64 and int64).
        torch.distributed.all_reduce(total_nats)
        torch.distributed.all_reduce(total_bytes)
    return bits_per_byte(total_nats, total_bytes)


class ValBpbCallback(MetricsCallback):
    """Logs `val_bpb` every `eval_every` steps and at the last step.

    Args:
        dataset: the validation rows (an iterable of dicts with `input_ids`, `shift_labels`, e.g. the
            validation `PretrainDataset` of this rank); iterated from its start at each evaluation.
        token_bytes: int tensor [vocab]: byte length of each token, 0 for special tokens.
        eval_every: steps between evaluations (nanochat: 250).
        eval_tokens: validation tokens per evaluation over all processes (nanochat: 10,485,760);
            each process evaluates ceil(eval_tokens / (sequence_len x processes)) rows.
        batch_size: rows per forward pass (defaults to the training micro-batch).
    """

    def __init__(
        self, dataset, token_bytes, eval_every=NANOCHAT_EVAL_EVERY, eval_tokens=NANOCHAT_EVAL_TOKENS, batch_size=None
    ):
        super().__init__()
        self.dataset = dataset
        self.token_bytes = torch.as_tensor(token_bytes)
        self.eval_every = eval_every
        self.eval_tokens = eval_tokens
        self.batch_size = batch_size

    def evaluate(self, model, args, show_progress: bool = False) -> float:
        batch_size = self.batch_size or args.per_device_eval_batch_size or args.per_device_train_batch_size
        autocast_dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
        with fp8_disabled(model):  # validation in bf16, as nanochat evaluates an FP8 run
            return evaluate_bpb(
                model, self.dataset, self.token_bytes, self.eval_tokens, batch_size, autocast_dtype, show_progress
            )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.eval_every == 0 or state.global_step >= state.max_steps:
            show_progress = state.is_world_process_zero and not args.disable_tqdm
            self.publish({"val_bpb": self.evaluate(model, args, show_progress)}, control)
