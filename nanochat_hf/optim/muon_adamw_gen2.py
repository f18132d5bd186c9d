"""nanochat generation 2's optimizer (its 2026 `MuonAdamW`) as ONE `torch.optim.Optimizer`.

One optimizer, as for generation 1 (`muon_adamw.py`), because the Trainer checkpoints `state_dict()`,
wraps the optimizer in accelerate's `AcceleratedOptimizer` and builds one `LambdaLR` over its groups.
Every group has a `kind` ("muon" or "adamw") and a readable `name`; `param_groups_gen2.py` builds them
from a model:

| name            | parameters                                    | kind  | lr (before the schedule)    | betas        | wd    |
|-----------------|-----------------------------------------------|-------|-----------------------------|--------------|-------|
| `muon_RxC`      | block matrices of shape R×C (ve_gate included) | muon  | matrix_lr·bls (0.02·bls)    | —            | sched |
| `unembedding`   | `lm_head.weight`                              | adamw | 0.008·bls·s_d               | (0.8, 0.96)  | 0.01  |
| `embedding`     | `wte.weight`                                  | adamw | 0.3·bls·s_d                 | (0.8, 0.995) | 0.001 |
| `value_embeds`  | `value_embeds.{i}.weight`                     | adamw | ½·0.3·bls·s_d               | (0.8, 0.995) | 0.01  |
| `resid_lambdas` | `resid_lambdas`                               | adamw | 0.01·0.5·bls                | (0.8, 0.95)  | 0.05  |
| `x0_lambdas`    | `x0_lambdas`                                  | adamw | 0.5·bls                     | (0.96, 0.95) | 0.0   |
| `smear_backout` | `smear_gate.weight`, `smear_lambda`, `backout_lambda` | adamw | 0.2 (fixed)         | (0.8, 0.95)  | 0.0   |

(eps 1e-10 everywhere; bls = √(B/2^19), s_d = (d/768)^-0.5; see `scaling_gen2.py`.) Muon groups come
first, so the Trainer's logged `learning_rate` (group 0) is the matrix LR, as in generation 1.

**Muon** (`muon_update_gen2.py`, one rule per function): Nesterov momentum → MuonEq → Polar Express →
Muon+ → NorMuon (β2 0.9) → cautious weight decay with lr·√max(1, rows/cols). The matrices of a group
share one shape, and with `stack_matrices=True` (the default, as nanochat) the group is updated as ONE
(K, rows, cols) stack: a handful of batched matmuls instead of K small ones. `stack_matrices=False`
updates matrix by matrix without the stacked copies (less peak memory). `compile=True` compiles the
update (`torch.compile(fullgraph=True, dynamic=False)`, once per shape), as nanochat does on GPUs.
State per matrix: `momentum_buffer` (its shape) and `second_momentum_buffer` ((rows, 1) or (1, cols)), in
the parameter's dtype.

**Schedules live in the optimizer**, for the reason given in generation 1's module: each Muon group keeps
`step` (updates done) and sets, before every update, `momentum` = μ(step) (0.85 → 0.97 over 400 updates,
0.97 → 0.90 over the warm-down) and `weight_decay` = λ(step) (a cosine from `initial_weight_decay` to 0
over `num_iterations`), from its own fields `momentum_start`, `momentum_peak`, `momentum_warmup_steps`,
`momentum_end`, `momentum_warmdown_ratio`, `num_iterations`, `weight_decay_schedule`. All of them are in
`state_dict()`, so a resumed run continues bit-identically, and the LR schedule (`get_gen2_schedule`)
writes its horizon into `num_iterations`. `load_moments(state_dict)` instead warm-starts from another
run's moments while keeping this optimizer's settings (nanochat's SFT from the base optimizer).

**AdamW** is torch's own functional `adamw` (decoupled weight decay p·(1−lr·wd), bias-corrected moments),
always in float32: parameters stored in bf16 (nanochat stores `wte` and the value embeddings in its compute
dtype) are updated through float32 copies, their moments stored in the parameter's dtype, as nanochat.

**Distributed**: not distributed itself. Under DDP every rank holds the averaged gradients and performs
the same update, which is nanochat's ZeRO-2 update mathematically. `sharded.py` shards its state across
processes (DDP or FSDP2), as for generation 1.
"""

from collections.abc import Iterable
from copy import deepcopy
from typing import Any

import torch
from torch.optim import Optimizer

from ..errors import UserInputError
from .adamw_update import adamw_group_step
from .checks import check_number
from .muon_update_gen2 import POLAR_EXPRESS_COEFFICIENTS, lr_shape_factor, muon_update_, second_moment_shape
from .schedule_gen2 import (
    MOMENTUM_END,
    MOMENTUM_PEAK,
    MOMENTUM_START,
    MOMENTUM_WARMUP_STEPS,
    WARMDOWN_RATIO,
    gen2_muon_momentum,
    gen2_muon_weight_decay,
)


MUON_GROUP_DEFAULTS: dict[str, Any] = {
    "lr": 0.02,
    "beta2": 0.9,
    "ns_steps": 5,
    "initial_weight_decay": 0.0,
    "weight_decay_schedule": "cosine",
    "num_iterations": None,
    "momentum_start": MOMENTUM_START,
    "momentum_peak": MOMENTUM_PEAK,
    "momentum_warmup_steps": MOMENTUM_WARMUP_STEPS,
    "momentum_end": MOMENTUM_END,
    "momentum_warmdown_ratio": WARMDOWN_RATIO,
    "ortho_dtype": "auto",  # "auto" = bfloat16 on CUDA with bf16 support (SM >= 80), else float32
    "step": 0,
}
ADAMW_GROUP_DEFAULTS: dict[str, Any] = {
    "lr": 0.3,
    "betas": (0.8, 0.95),
    "eps": 1e-10,
    "weight_decay": 0.0,
    "foreach": None,
}
_GROUP_DEFAULTS = {"muon": MUON_GROUP_DEFAULTS, "adamw": ADAMW_GROUP_DEFAULTS}
_ORTHO_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Group keys that say which tensors a group holds (everything else is a setting or progress).
_IDENTITY_KEYS = ("params", "param_names")


def _tensor_of(param):
    return param[1] if isinstance(param, tuple) else param


def _check_group(group: dict[str, Any]) -> None:
    """Clear errors for hyper-parameters that are not finite or out of range, before any update."""
    where = f"NanoChatGen2MuonAdamW group {group['name']!r}"

    def number(key, **bounds):
        check_number(key, group[key], where=where, **bounds)

    number("lr", low=0.0)
    if group["kind"] == "adamw":
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise UserInputError(f"{where}: betas must be a pair (beta1, beta2), got {betas!r}")
        for beta in betas:
            check_number("betas", beta, low=0.0, high=1.0, high_open=True, where=where)
        number("eps", low=0.0)
        number("weight_decay", low=0.0)
        return
    number("beta2", low=0.0, high=1.0, high_open=True)
    number("ns_steps", low=1, high=len(POLAR_EXPRESS_COEFFICIENTS), whole=True)
    number("initial_weight_decay", low=0.0)
    for key in ("momentum_start", "momentum_peak", "momentum_end"):
        number(key, low=0.0, high=1.0, high_open=True)
    number("momentum_warmup_steps", low=0, whole=True)
    number("momentum_warmdown_ratio", low=0.0, high=1.0)
    number("step", low=0, whole=True)
    if group["num_iterations"] is not None:
        number("num_iterations", low=1, whole=True)
    if group["weight_decay_schedule"] not in ("cosine", "constant"):
        raise UserInputError(
            f"{where}: weight_decay_schedule must be 'cosine' or 'constant', got {group['weight_decay_schedule']!r}"
        )
    if group["ortho_dtype"] not in ("auto", *_ORTHO_DTYPES):
        raise UserInputError(
            f"{where}: ortho_dtype must be 'auto', 'float32' or 'bfloat16', got {group['ortho_dtype']!r}"
        )
    shapes = {tuple(_tensor_of(p).shape) for p in group["params"]}
    if any(len(shape) != 2 for shape in shapes) or len(shapes) > 1:
        raise UserInputError(f"{where}: a Muon group holds 2-D matrices of one shape, got shapes {sorted(shapes)}")


class NanoChatGen2MuonAdamW(Optimizer):
    """nanochat 2026's MuonAdamW in one optimizer; see the module docstring.

    Args:
        params: param groups (dicts) with `kind` "muon" or "adamw" and a `name`; missing hyper-parameters
            take the defaults of their kind. `build_gen2_optimizer(model)` makes nanochat's groups. For a
            Muon group, `weight_decay` given without `initial_weight_decay` is taken as the latter.
        stack_matrices: update each Muon group as one stacked tensor (faster) or matrix by matrix.
        compile: `torch.compile` the Muon update (GPU runs; eager by default).
    """

    def __init__(self, params: Iterable[dict[str, Any]], *, stack_matrices: bool = True, compile: bool = False):
        self.stack_matrices = stack_matrices
        self._muon_update = torch.compile(muon_update_, fullgraph=True, dynamic=False) if compile else muon_update_
        self._ortho_dtypes: dict[torch.device, torch.dtype] = {}
        super().__init__(params, defaults={})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict) or param_group.get("kind") not in _GROUP_DEFAULTS:
            found = param_group.get("kind") if isinstance(param_group, dict) else type(param_group).__name__
            raise UserInputError(
                f"NanoChatGen2MuonAdamW: every param group must have kind 'muon' or 'adamw', got {found!r}"
            )
        kind = param_group["kind"]
        param_group.setdefault("name", kind)
        params = param_group["params"]
        param_group["params"] = [params] if isinstance(params, torch.Tensor) else list(params)
        if kind == "muon" and "initial_weight_decay" not in param_group and "weight_decay" in param_group:
            param_group["initial_weight_decay"] = param_group["weight_decay"]
        for key, value in _GROUP_DEFAULTS[kind].items():
            param_group.setdefault(key, value)
        _check_group(param_group)
        if kind == "muon":
            self._schedule(param_group)  # visible (and logged) before the first update
        super().add_param_group(param_group)

    @staticmethod
    def _schedule(group: dict[str, Any]) -> None:
        """Set the group's momentum and weight decay for its next update from its own counter."""
        it = group["step"]
        group["momentum"] = gen2_muon_momentum(
            it,
            num_iterations=group["num_iterations"],
            start=group["momentum_start"],
            peak=group["momentum_peak"],
            warmup_steps=group["momentum_warmup_steps"],
            end=group["momentum_end"],
            warmdown_ratio=group["momentum_warmdown_ratio"],
        )
        group["weight_decay"] = gen2_muon_weight_decay(
            it,
            initial=group["initial_weight_decay"],
            num_iterations=group["num_iterations"],
            schedule=group["weight_decay_schedule"],
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["kind"] == "muon":
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    # ---- Muon

    def _ortho_dtype(self, group: dict[str, Any], device: torch.device) -> torch.dtype:
        if group["ortho_dtype"] != "auto":
            return _ORTHO_DTYPES[group["ortho_dtype"]]
        if device not in self._ortho_dtypes:
            bf16 = device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8
            self._ortho_dtypes[device] = torch.bfloat16 if bf16 else torch.float32
        return self._ortho_dtypes[device]

    def _muon_step(self, group: dict[str, Any]) -> None:
        # The counter advances even if no matrix of the group has a gradient: the schedules follow the
        # global update index, as nanochat's μ(it) and λ(it) do.
        self._schedule(group)
        group["step"] += 1
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for param in params:
            if param.grad.is_sparse:
                raise RuntimeError("NanoChatGen2MuonAdamW does not support sparse gradients")
            state = self.state[param]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["second_momentum_buffer"] = param.new_zeros(second_moment_shape(*param.shape))
        batches = [params] if self.stack_matrices else [[param] for param in params]
        device = params[0].device
        rows, cols = params[0].shape

        def scalar(value: float) -> torch.Tensor:  # 0-D float32 on the device (see muon_update_gen2)
            return torch.full((), value, dtype=torch.float32, device=device)

        settings = dict(
            lr=scalar(group["lr"] * lr_shape_factor(rows, cols)),
            momentum=scalar(group["momentum"]),
            weight_decay=scalar(group["weight_decay"]),
            beta2=scalar(group["beta2"]),
            ns_steps=group["ns_steps"],
            ortho_dtype=self._ortho_dtype(group, device),
        )
        for batch in batches:
            tensors = [
                [p for p in batch],
                [p.grad for p in batch],
                [self.state[p]["momentum_buffer"] for p in batch],
                [self.state[p]["second_momentum_buffer"] for p in batch],
            ]
            stacks = [_float32_stack(ts) for ts in tensors]
            self._muon_update(*(stack for stack, _ in stacks), **settings)
            for index in (0, 2, 3):  # parameters and both buffers; the gradients are left as they were
                stack, copied = stacks[index]
                if copied:
                    torch._foreach_copy_(tensors[index], list(stack.unbind(0)))

    # ---- AdamW

    def _adamw_step(self, group: dict[str, Any]) -> None:
        adamw_group_step(self.state, group, owner="NanoChatGen2MuonAdamW", float32_math=True)

    # ---- warm start

    def load_moments(self, state_dict: dict[str, Any]) -> None:
        """Load another run's per-parameter state (momenta, second moments, AdamW step counts) but keep
        this optimizer's groups: LRs, betas, weight decays, schedules and a Muon `step` of its own.

        This is nanochat's SFT warm start from the base optimizer (it then resets the LRs it had).
        The saved groups must hold the same parameters in the same order.
        """
        own_groups = [{k: deepcopy(v) for k, v in g.items() if k not in _IDENTITY_KEYS} for g in self.param_groups]
        self.load_state_dict(state_dict)
        for group, own in zip(self.param_groups, own_groups, strict=True):
            for key in [k for k in group if k not in _IDENTITY_KEYS and k not in own]:
                del group[key]
            group.update(own)


def _float32_stack(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """(K, ...) float32 view of `tensors` and whether it is a copy (a single float32 tensor is not)."""
    if len(tensors) == 1 and tensors[0].dtype == torch.float32:
        return tensors[0].unsqueeze(0), False
    return torch.stack(tensors).float(), True
