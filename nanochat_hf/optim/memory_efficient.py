"""nanochat's Muon + AdamW with the memory knobs of `nanochat_hf/planning/memory_modes.py`.

`MemoryEfficientMuonAdamW` is `NanoChatMuonAdamW` (same param groups, same schedule of Muon's momentum, same
`state_dict` keys for full-precision state) with three independent options:

- `muon_momentum="8bit"`: Muon's momentum stored blockwise-quantised (`quantized_state.py`): ~1 byte per
  value instead of 4. Each step dequantises the buffer, applies torch's Muon momentum math in fp32
  (`buf.lerp_(g, 1-μ)`, Nesterov `g.lerp(buf, μ)`), and quantises it back.
- `adamw_state="8bit"`: the embedding and `lm_head` use bitsandbytes' `AdamW8bit` (its blockwise 8-bit
  moments; `PagedAdamW8bit` with `paged=True`, which needs CUDA: paged memory is CUDA unified memory, so
  on the CPU the plain 8-bit optimizer is used). One bitsandbytes optimizer runs inside this one, over the
  same parameters, with the learning rates of our param groups copied in before each step, so the Trainer
  still sees ONE optimizer and one LR schedule; its state is saved under the key `adamw_8bit`.
- `newton_schulz_device`: where Muon's Newton-Schulz runs when the parameters live elsewhere (the CPU
  master weights of the offloading engine, `offload.py`): the Nesterov update goes there in bf16 (the
  first thing torch's `_zeropower_via_newtonschulz` does is cast to bf16, so nothing is lost on the way),
  the orthogonalised bf16 update comes back and is applied to the fp32 parameter. The copies are
  asynchronous from pinned memory, and the loop is pipelined one parameter deep: the CPU computes the next
  parameter's momentum while the GPU orthogonalises the current one.

With every option at its default the Muon step IS `NanoChatMuonAdamW`'s (torch's functional Muon), and
otherwise it performs the same operations in the same order (`tests/test_memory_engine.py` checks equality).
"""

import logging
from typing import Any

import torch
from torch.optim._muon import _adjust_lr, _zeropower_via_newtonschulz

from ..errors import UserInputError
from .muon_adamw import NanoChatMuonAdamW
from .quantized_state import dequantize, empty_quantized, is_quantized, quantize_into, signed_dynamic_code


logger = logging.getLogger(__name__)

# State keys of 8-bit momentum; kept out of torch's load_state_dict, which would cast them to the
# parameter's float dtype.
QUANTIZED_MOMENTUM_KEYS = ("momentum_codes", "momentum_absmax")
ADAMW_8BIT_KEY = "adamw_8bit"


class MemoryEfficientMuonAdamW(NanoChatMuonAdamW):
    """`NanoChatMuonAdamW` with optional 8-bit Muon momentum, 8-bit AdamW and off-device Newton-Schulz.

    Args:
        params: param groups as for `NanoChatMuonAdamW` (`nanochat_param_groups(model)`).
        muon_momentum: "full" (fp32 buffer, torch's layout) or "8bit" (blockwise-quantised).
        adamw_state: "full" (torch's AdamW) or "8bit" (bitsandbytes AdamW8bit) for the AdamW groups.
        paged: with "8bit" AdamW on CUDA, bitsandbytes' paged variant (state in unified memory).
        newton_schulz_device: device for Newton-Schulz; None = each parameter's own device.
    """

    def __init__(
        self,
        params,
        *,
        muon_momentum: str = "full",
        adamw_state: str = "full",
        paged: bool = False,
        newton_schulz_device: torch.device | str | None = None,
    ):
        if muon_momentum not in ("full", "8bit"):
            raise UserInputError(f"muon_momentum must be 'full' or '8bit', got {muon_momentum!r}")
        if adamw_state not in ("full", "8bit"):
            raise UserInputError(f"adamw_state must be 'full' or '8bit', got {adamw_state!r}")
        self.muon_momentum = muon_momentum
        self.adamw_state = adamw_state
        self.newton_schulz_device = torch.device(newton_schulz_device) if newton_schulz_device is not None else None
        self._code_books: dict[torch.device, torch.Tensor] = {}
        super().__init__(params)
        self._adamw_8bit = self._build_adamw_8bit(paged) if adamw_state == "8bit" else None

    # ---- 8-bit AdamW through bitsandbytes

    def _adamw_groups(self) -> list[dict[str, Any]]:
        return [group for group in self.param_groups if group["kind"] == "adamw"]

    def _build_adamw_8bit(self, paged: bool):
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise UserInputError(
                f"adamw_state 8bit needs bitsandbytes (pip install 'nanochat-hf[quant]'): {err}"
            ) from None
        params = [p for group in self._adamw_groups() for p in group["params"]]
        on_cuda = bool(params) and all(p.is_cuda for p in params)
        if paged and not on_cuda:
            logger.info("paged 8-bit AdamW needs CUDA unified memory; the state is on the CPU, so it is not paged")
        optimizer_class = bnb.optim.PagedAdamW8bit if paged and on_cuda else bnb.optim.AdamW8bit
        groups = [
            {
                "params": list(group["params"]),
                "lr": group["lr"],
                "betas": group["betas"],
                "eps": group["eps"],
                "weight_decay": group["weight_decay"],
            }
            for group in self._adamw_groups()
        ]
        return optimizer_class(groups)

    def state_dict(self) -> dict[str, Any]:
        state_dict = super().state_dict()
        if self._adamw_8bit is not None:
            state_dict[ADAMW_8BIT_KEY] = self._adamw_8bit.state_dict()
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        adamw_8bit = state_dict.pop(ADAMW_8BIT_KEY, None)
        if (adamw_8bit is None) != (self._adamw_8bit is None):
            saved = "8-bit" if adamw_8bit is not None else "full-precision"
            raise UserInputError(
                f"the optimizer state holds {saved} AdamW state but this run uses adamw_state={self.adamw_state!r}; "
                "resume with the memory knobs the checkpoint was written with"
            )
        # torch casts every floating parameter's state tensors to the parameter's dtype; 8-bit codes must not be.
        state = {index: dict(entries) for index, entries in state_dict["state"].items()}
        quantized = {
            index: {key: entries.pop(key) for key in QUANTIZED_MOMENTUM_KEYS if key in entries}
            for index, entries in state.items()
        }
        super().load_state_dict({**state_dict, "state": state})
        params = [p for group in self.param_groups for p in group["params"]]
        for index, entries in quantized.items():
            for key, value in entries.items():
                self.state[params[index]][key] = value.to(params[index].device)
        if adamw_8bit is not None:
            self._adamw_8bit.load_state_dict(adamw_8bit)

    # ---- the step

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["kind"] == "muon":
                self._muon_step(group)
            elif self._adamw_8bit is None:
                self._adamw_step(group)
                self._parameters_updated(group)
        if self._adamw_8bit is not None:
            # Our param groups carry the scheduled learning rates; bitsandbytes' groups follow them.
            for inner, outer in zip(self._adamw_8bit.param_groups, self._adamw_groups(), strict=True):
                inner["lr"] = outer["lr"]
            self._adamw_8bit.step()
            for group in self._adamw_groups():
                self._parameters_updated(group)
        return loss

    def _parameters_updated(self, group: dict[str, Any]) -> None:
        for param in group["params"]:
            if param.grad is not None:
                self._parameter_updated(param)

    def _parameter_updated(self, param: torch.Tensor) -> None:
        """Called after each parameter's update; the offloading engine copies the new weight to the GPU."""

    def _muon_step(self, group: dict[str, Any]) -> None:
        if self.muon_momentum == "full" and self.newton_schulz_device is None:
            super()._muon_step(group)  # torch's functional Muon, exactly as NanoChatMuonAdamW
            self._parameters_updated(group)
            return
        group["momentum"] = self._scheduled_momentum(group)
        group["step"] += 1
        # One parameter in flight: orthogonalise parameter i on the device while the CPU prepares i + 1.
        in_flight = None
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise RuntimeError("MemoryEfficientMuonAdamW does not support sparse gradients")
            orthogonalised = self._orthogonalise(param, self._nesterov_update(param, group), group)
            if in_flight is not None:
                self._apply_muon_update(*in_flight, group)
            in_flight = (param, orthogonalised)
        if in_flight is not None:
            self._apply_muon_update(*in_flight, group)

    def _nesterov_update(self, param: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """torch's Muon momentum step (`_single_tensor_muon`) with the buffer stored in full or 8-bit."""
        grad, state, momentum = param.grad, self.state[param], group["momentum"]
        quantized = self.muon_momentum == "8bit" and is_quantized(param.numel())
        if quantized:
            if "momentum_codes" not in state:
                state["momentum_codes"], state["momentum_absmax"] = empty_quantized(grad)
            code = self._code_book(grad.device)
            buffer = dequantize(state["momentum_codes"], state["momentum_absmax"], code)
        else:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
            buffer = state["momentum_buffer"]
        buffer.lerp_(grad, 1 - momentum)
        update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
        if quantized:
            quantize_into(buffer, state["momentum_codes"], state["momentum_absmax"], code)
        return update

    def _code_book(self, device: torch.device) -> torch.Tensor:
        if device not in self._code_books:
            self._code_books[device] = signed_dynamic_code(device)
        return self._code_books[device]

    def _orthogonalise(self, param: torch.Tensor, update: torch.Tensor, group: dict[str, Any]):
        """Start Newton-Schulz of `update`; returns (bf16 result on the parameter's device, event or None)."""
        # A bf16 copy: torch's Newton-Schulz starts with `.bfloat16()` and then normalises in place.
        update = update.to(torch.bfloat16, copy=True)
        device = self.newton_schulz_device or param.device
        if device == param.device:
            args = (group["ns_coefficients"], group["ns_steps"], group["eps"])
            return _zeropower_via_newtonschulz(update, *args), None
        on_device = _to_device(update, device)
        result = _zeropower_via_newtonschulz(on_device, group["ns_coefficients"], group["ns_steps"], group["eps"])
        if param.device.type != "cpu" or device.type != "cuda":
            return result.to(param.device), None
        host = torch.empty(result.shape, dtype=result.dtype, pin_memory=True)
        host.copy_(result, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done

    def _apply_muon_update(self, param: torch.Tensor, orthogonalised, group: dict[str, Any]) -> None:
        update, done = orthogonalised
        if done is not None:
            done.synchronize()
        # nanochat generation 1's Muon has no weight decay; lr·√max(1, rows/cols) as torch's "original".
        param.add_(update, alpha=-_adjust_lr(group["lr"], "original", param.shape))
        self._parameter_updated(param)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to `device`, asynchronously through pinned memory when that is a CUDA device."""
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
