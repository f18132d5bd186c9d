"""The offloading engine of the `12gb` and `8gb` memory modes (bf16 on the GPU, fp32 state in CPU RAM).

What lives where:
- GPU: the model in bf16 (3.5 GiB for d32) and, during backward, at most `grad_bucket_layers` blocks'
  gradients plus the embedding's and lm_head's.
- CPU RAM: an fp32 master copy of every parameter, an fp32 gradient sum per parameter and all optimizer
  state (Muon momentum, AdamW moments): 22 GiB for d32.

How a step runs:
1. Backward: as soon as autograd has accumulated a parameter's gradient, a post-accumulate-grad hook
   (`Tensor.register_post_accumulate_grad_hook`) copies it into a pinned staging buffer (on a side CUDA
   stream, so the copy overlaps the rest of backward) and drops the GPU gradient; a CPU thread waits for
   the copy and adds it to the parameter's fp32 sum. Gradient accumulation over hundreds of micro-steps
   is therefore fp32 (a bf16 sum would drop small contributions), while the GPU never holds more than a bucket.
   A staging buffer is reused by layer i + bucket only once layer i's sum is done, which bounds both
   the GPU gradients in flight and the pinned memory to what the planner counts.
2. `clip_grad_norm_` (nanochat's max norm 1.0) works on the fp32 sums: the Trainer's own clipping would
   see no GPU gradients at all, so `NanoChatPretrainer` routes it here, and a step clips at most once.
3. `step()`: Muon (`MemoryEfficientMuonAdamW` with `newton_schulz_device` = the GPU): momentum and
   Nesterov in fp32 on the CPU, the bf16 update to the GPU, Newton-Schulz there (on the CPU it would
   cost ~30 % of training time: d32's 8.25e13 FLOPs per step at ~1 TFLOP/s), the orthogonalised update back,
   applied to the fp32 master; AdamW
   for wte and lm_head on the CPU. Each parameter's new value goes to the GPU in bf16 as soon as it is
   ready (bf16 weights need an fp32 master: an update below ~2^-8 of a weight is lost in bf16).

Why not an existing engine (checked, Nov 2026):
- DeepSpeed ZeRO-Offload (through Accelerate) keeps fp32 master weights, gradients and optimizer state in
  CPU RAM and is the closest match, but ZeRO flattens parameters into 1-D partitions, and its optimizer
  step runs on the CPU. DeepSpeed's Muon support (deepspeedai/DeepSpeed#7509, ZeRO-1/2) re-assembles
  matrices on the GPU, but under CPU offload the flattened partitions bypass Newton-Schulz (loss diverges;
  reported in deepspeedai/DeepSpeed#8463, fix #8464 still open; an earlier attempt, #7939, was closed).
  It would also replace nanochat's exact Muon (torch's math, momentum warm-up in the optimizer) and is
  not installed here. (`accelerate_configs/deepspeed_zero2_offload.yaml` remains for AdamW-only runs.)
- bitsandbytes paged optimizers page *their own* state through CUDA unified memory and update it with
  GPU kernels; they have no Muon, keep no fp32 master copy of bf16 weights and do not accumulate
  gradients on the host. We do use bitsandbytes for what it does: 8-bit AdamW (optionally paged) and the
  blockwise quantiser of 8-bit Muon momentum.
So this module writes only the part no library provides: the gradient streaming into fp32 host sums and
the master-weight bookkeeping; the update math is torch's (Muon, AdamW) or bitsandbytes'.

Everything also runs with `device="cpu"` (the same code, without pinned memory or streams), which is how
the tests exercise it; with fp32 "device" weights it is exact to `NanoChatMuonAdamW`.
"""

import concurrent.futures
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import UserInputError
from .memory_efficient import MemoryEfficientMuonAdamW
from .muon_adamw import nanochat_param_groups


MASTER_WEIGHT_KEY = "fp32_master"
_BLOCK_PARAM = re.compile(r"(?:^|\.)h\.(\d+)\.(.+)$")


@dataclass
class _StagingSlot:
    """A host buffer one gradient is copied into, and the CPU addition still reading it."""

    buffer: torch.Tensor
    pending: concurrent.futures.Future | None = None

    def wait(self) -> None:
        if self.pending is not None:
            self.pending.result()  # re-raises anything the CPU thread hit
            self.pending = None


@dataclass
class _Entry:
    """One model parameter: its fp32 master (whose `.grad` is the fp32 sum) and its staging slot."""

    name: str
    weight: nn.Parameter  # the model's (GPU, bf16) parameter
    master: torch.Tensor
    slot: _StagingSlot
    received: bool = False  # a gradient arrived since the last step
    hook: Any = field(default=None, repr=False)


def _accumulate(grad_sum: torch.Tensor, staged: torch.Tensor, copied) -> None:
    if copied is not None:
        copied.synchronize()
    grad_sum.add_(staged)  # bf16 (or fp32) into fp32: the sum is fp32


class OffloadedMuonAdamW(MemoryEfficientMuonAdamW):
    """Mode H: bf16 weights on `device`; fp32 masters, fp32 gradient sums and optimizer state in CPU RAM.

    Construct it from the model *before* the model is cast (an fp32 model gives exact fp32 masters): it
    copies the masters, casts the model's parameters in place to `weights_dtype` on `device` and installs
    the gradient hooks. Its param groups hold the masters (so an LR scheduler and `state_dict` work as for
    any optimizer); `state_dict` also carries the masters themselves, so a resume is exact.

    Args:
        model: a nanochat model (parameter routing as `nanochat_param_groups`).
        device: where the model computes (default: where its parameters are now).
        weights_dtype: dtype of the model's weights on the device (bf16; fp32 for exactness tests).
        embedding_dtype: dtype of `wte` on the device (default: `weights_dtype`).
        grad_bucket_layers: blocks whose gradients may be on the device (and staged) at once.
        max_grad_norm: clip the fp32 gradient sums to this norm in `step()` unless `clip_grad_norm_` was
            already called for this step (0 = no clipping).
        muon_momentum, adamw_state: "full" or "8bit" (see `MemoryEfficientMuonAdamW`).
        **group_settings: learning rates etc. for `nanochat_param_groups`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: torch.device | str | None = None,
        weights_dtype: torch.dtype = torch.bfloat16,
        embedding_dtype: torch.dtype | None = None,
        grad_bucket_layers: int = 2,
        max_grad_norm: float = 0.0,
        muon_momentum: str = "full",
        adamw_state: str = "full",
        **group_settings,
    ):
        if grad_bucket_layers < 1:
            raise UserInputError(f"grad_bucket_layers must be >= 1, got {grad_bucket_layers}")
        device = torch.device(device) if device is not None else next(model.parameters()).device
        groups = nanochat_param_groups(model, **group_settings)
        routed = {name for group in groups for name, _ in group["params"]}
        # In the model's order, so norms over the gradient sums add up as they would over `model.parameters()`.
        named = {name: param for name, param in model.named_parameters() if name in routed}
        embedding = model.get_input_embeddings().weight
        dtypes = {
            name: embedding_dtype if param is embedding and embedding_dtype is not None else weights_dtype
            for name, param in model.named_parameters()
        }
        masters = {name: param.detach().to("cpu", torch.float32, copy=True) for name, param in named.items()}
        for master in masters.values():
            master.grad = torch.zeros_like(master)
        for group in groups:
            group["params"] = [(name, masters[name]) for name, _ in group["params"]]
        super().__init__(groups, muon_momentum=muon_momentum, adamw_state=adamw_state, newton_schulz_device=device)

        self.device, self.weights_dtype, self.max_grad_norm = device, weights_dtype, max_grad_norm
        self._clipped_this_step = False
        self._on_cuda = device.type == "cuda"
        self._copy_stream = torch.cuda.Stream(device) if self._on_cuda else None
        self._adder = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="grad-sum")

        # The model's parameters (frozen ones too) change dtype and device in place: hooks and the Trainer keep
        # their handles.
        for name, param in model.named_parameters():
            param.data = param.data.to(device=device, dtype=dtypes[name])
        slots: dict[tuple, _StagingSlot] = {}
        self._entries: dict[nn.Parameter, _Entry] = {}
        self._by_master: dict[torch.Tensor, _Entry] = {}
        for name, param in named.items():
            block = _BLOCK_PARAM.search(name)
            key = ("block", int(block.group(1)) % grad_bucket_layers, block.group(2)) if block else ("edge", name)
            if key not in slots:
                buffer = torch.empty(param.shape, dtype=dtypes[name], pin_memory=self._on_cuda)
                slots[key] = _StagingSlot(buffer)
            entry = _Entry(name, param, masters[name], slots[key])
            entry.hook = param.register_post_accumulate_grad_hook(self._gradient_ready)
            self._entries[param] = entry
            self._by_master[entry.master] = entry
        self._slots = list(slots.values())

    # ---- backward: stream each gradient into its fp32 sum

    def _gradient_ready(self, param: nn.Parameter) -> None:
        entry = self._entries[param]
        grad, slot = param.grad, entry.slot
        slot.wait()  # the previous user of this buffer (bucket_layers blocks ago) must be summed first
        if self._on_cuda:
            self._copy_stream.wait_stream(torch.cuda.current_stream(grad.device))
            with torch.cuda.stream(self._copy_stream):
                slot.buffer.copy_(grad, non_blocking=True)
                copied = torch.cuda.Event()
                copied.record()
            grad.record_stream(self._copy_stream)  # its memory is reused only after the copy
        else:
            slot.buffer.copy_(grad)
            copied = None
        param.grad = None
        entry.received = True
        slot.pending = self._adder.submit(_accumulate, entry.master.grad, slot.buffer, copied)

    def finish_accumulation(self) -> None:
        """Wait until every streamed gradient is in its fp32 sum."""
        for slot in self._slots:
            slot.wait()

    # ---- clipping on the fp32 sums

    def _summed(self) -> list[torch.Tensor]:
        return [entry.master for entry in self._entries.values() if entry.received]

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Clip the fp32 gradient sums (as `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping."""
        self.finish_accumulation()
        self._clipped_this_step = True
        return torch.nn.utils.clip_grad_norm_(self._summed(), max_norm)

    def grad_norm(self) -> torch.Tensor:
        """Norm of the fp32 gradient sums, without clipping."""
        self.finish_accumulation()
        return torch.nn.utils.get_total_norm([master.grad for master in self._summed()])

    # ---- the step

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.finish_accumulation()
        if self.max_grad_norm and self.max_grad_norm > 0 and not self._clipped_this_step:
            self.clip_grad_norm_(self.max_grad_norm)
        # As torch optimizers skip parameters whose grad is None, skip those that got no gradient.
        idle = {entry.master: entry.master.grad for entry in self._entries.values() if not entry.received}
        for master in idle:
            master.grad = None
        try:
            super().step()
        finally:
            for master, grad_sum in idle.items():
                master.grad = grad_sum
        for entry in self._entries.values():
            if entry.received:
                self.state[entry.master][MASTER_WEIGHT_KEY] = entry.master
            entry.master.grad.zero_()
            entry.received = False
        self._clipped_this_step = False
        return loss

    def _parameter_updated(self, master: torch.Tensor) -> None:
        """Send the new value of one master to the device in the weights' dtype."""
        weight = self._by_master[master].weight
        if self._on_cuda:
            staged = torch.empty(master.shape, dtype=weight.dtype, pin_memory=True)
            staged.copy_(master)
            weight.data.copy_(staged, non_blocking=True)
        else:
            weight.data.copy_(master)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop any gradient sums not yet used (the sums are zeroed by `step()` itself)."""
        self.finish_accumulation()
        for entry in self._entries.values():
            entry.master.grad.zero_()
            entry.received = False
        self._clipped_this_step = False

    # ---- checkpoints: the masters travel with the optimizer state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Optimizer state and, when the checkpoint has them, the fp32 masters (which then overwrite the device
        weights). A checkpoint without masters (e.g. written in the `full` mode) keeps the model's current
        weights, which the Trainer has just loaded from the same checkpoint, as the masters."""
        super().load_state_dict(state_dict)
        if not state_dict["state"]:
            return  # nothing trained yet (accelerate's prepare() round-trips the empty state): keep the masters
        for entry in self._entries.values():
            state = self.state[entry.master]
            saved = state.get(MASTER_WEIGHT_KEY)
            if saved is None:
                entry.master.copy_(entry.weight.detach())
            elif saved is not entry.master:
                entry.master.copy_(saved)
                state[MASTER_WEIGHT_KEY] = entry.master
                self._parameter_updated(entry.master)

    @torch.no_grad()
    def sync_masters_from_model(self) -> None:
        """Take the model's current weights as the masters (after loading weights into the model directly)."""
        for entry in self._entries.values():
            entry.master.copy_(entry.weight.detach())

    def remove_hooks(self) -> None:
        """Detach the engine from the model (the model keeps its current weights)."""
        self.finish_accumulation()
        for entry in self._entries.values():
            if entry.hook is not None:
                entry.hook.remove()
                entry.hook = None

    def master_weights(self) -> dict[str, torch.Tensor]:
        """The fp32 master copy of every trained parameter, by name."""
        return {entry.name: entry.master for entry in self._entries.values()}
