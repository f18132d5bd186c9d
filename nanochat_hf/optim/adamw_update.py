"""The AdamW update of one param group, shared by both generations' optimizers: torch's functional `adamw`
with torch.optim.AdamW's own state layout (`step`, `exp_avg`, `exp_avg_sq`), so checkpoints read the same.

`float32_math=True` (generation 2) updates parameters stored in bf16/fp16 through float32 copies and writes
them back (moments stay in the parameter's dtype), as nanochat 2026 does; float32 parameters are updated in
place either way. Generation 1 passes False: torch's AdamW on the stored tensors, as before.
"""

from typing import Any

import torch
from torch.optim.adamw import adamw as adamw_functional


def adamw_group_step(state: dict, group: dict[str, Any], *, owner: str, float32_math: bool = False) -> None:
    """One AdamW update of `group`'s parameters that have a gradient; `state` is the optimizer's."""
    fused = group.get("fused")
    params, grads, exp_avgs, exp_avg_sqs, state_steps, write_back = [], [], [], [], [], []
    for param in group["params"]:
        if param.grad is None:
            continue
        if param.grad.is_sparse:
            raise RuntimeError(f"{owner} does not support sparse gradients")
        param_state = state[param]
        if len(param_state) == 0:
            # torch.optim.AdamW's state layout, so its checkpoints read the same way: `step` lives on
            # the CPU unless the fused kernel needs it on the parameter's device.
            if fused:
                param_state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            else:
                scalar_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
                param_state["step"] = torch.tensor(0.0, dtype=scalar_dtype)
            # zeros_like keeps the parameter's dtype: a bf16 wte gets bf16 moments, as in nanochat.
            param_state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            param_state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        tensors = (param, param.grad, param_state["exp_avg"], param_state["exp_avg_sq"])
        if float32_math and param.dtype != torch.float32:
            upcast = tuple(tensor.float() for tensor in tensors)
            write_back.append(((tensors[0], tensors[2], tensors[3]), (upcast[0], upcast[2], upcast[3])))
            tensors = upcast
        for bucket, tensor in zip((params, grads, exp_avgs, exp_avg_sqs), tensors, strict=True):
            bucket.append(tensor)
        state_steps.append(param_state["step"])
    if not params:
        return
    beta1, beta2 = group["betas"]
    adamw_functional(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        [],  # no AMSGrad
        state_steps,
        foreach=group.get("foreach"),
        fused=fused,
        has_complex=False,
        amsgrad=False,
        beta1=beta1,
        beta2=beta2,
        lr=group["lr"],
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=False,
    )
    for originals, working in write_back:
        torch._foreach_copy_(list(originals), list(working))
