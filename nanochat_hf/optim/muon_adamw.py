"""nanochat generation-1's optimizer as ONE `torch.optim.Optimizer`: Muon for the transformer matrices,
AdamW for the token embedding and the `lm_head` (nanochat's `muon.py`, `gpt.py` and `scripts/base_train.py`).

Why one class instead of nanochat's two optimizers: the HF Trainer checkpoints `optimizer.state_dict()`,
wraps the optimizer in accelerate's `AcceleratedOptimizer` and builds one `LambdaLR` over its
`param_groups`; all of that needs a single optimizer whose param groups are the real ones.

Every param group carries `kind` ("muon" or "adamw") and a readable `name`:

| name               | parameters                                         | kind  | lr (before the schedule)       |
|--------------------|----------------------------------------------------|-------|--------------------------------|
| `muon_{rows}x{cols}` | 2-D weights under `transformer.h.`, one per shape | muon  | matrix_lr = 0.02               |
| `embedding`        | `transformer.wte.weight`                           | adamw | embedding_lr·s_d = 0.2·s_d     |
| `unembedding`      | `lm_head.weight`                                   | adamw | unembedding_lr·s_d = 0.004·s_d |

with s_d = (d_model/768)^-0.5. The Trainer logs group 0's LR as `learning_rate`: that is the matrix LR.

**Muon math: `torch.optim.Muon`'s functional step, and why it is nanochat's.** Compared line by line
with nanochat's `nanochat/muon.py` (torch 2.13, `torch/optim/_muon.py`):
- momentum: `buf.lerp_(g, 1-μ)` = μ·buf + (1−μ)·g, Nesterov `g.lerp(buf, μ)` = (1−μ)·g + μ·buf: same.
- Newton–Schulz: bf16, transposed when rows > cols, coefficients (3.4445, −4.7750, 2.0315), 5 steps,
  A = XXᵀ, B = bA + cA², X ← aX + BX: same. Two floating-point-only differences: (1) normalisation is
  X / max(‖X‖, 1e-7) instead of X / (‖X‖ + 1e-7); in bf16 adding 1e-7 is a no-op for any norm above
  ~2.6e-5 and both give 0 for a zero gradient; (2) torch fuses b·A + c·A·A and a·X + B·X into `addmm`
  (one bf16 rounding instead of three), which is closer to the exact polynomial (about 1.5% vs 3%
  relative error to a float64 Newton–Schulz on random matrices), not a different algorithm.
- LR: `adjust_lr_fn="original"` is lr·√max(1, rows/cols), nanochat's scaling (c_fc gets 2×).
- weight decay: nanochat G1's Muon has none; we pass 0, and torch's `p.mul_(1 - lr·0)` is exact.
So the Muon groups call `torch.optim._muon.muon` (the functional form `torch.optim.Muon.step` uses) with
the state key it uses (`momentum_buffer`); `tests/test_optim_muon_adamw.py` checks equality with
`torch.optim.Muon` and closeness to a float64 reference of nanochat's Newton-Schulz.

**AdamW math** is `torch.optim.adamw.adamw` with torch AdamW's own state layout (`step`, `exp_avg`,
`exp_avg_sq`), betas (0.8, 0.95), eps 1e-10, weight decay 0. nanochat G1 used `AdamW(fused=True)` on GPU;
pass `fused=True` to match it (the default, None, lets torch choose as `torch.optim.AdamW` does).

**Momentum warm-up lives in the optimizer.** Each Muon group keeps `step` (updates done so far) and sets
`momentum = muon_momentum(step)` before its update. The counter is saved in the same `state_dict()` as the
momentum buffers, so after any resume the schedule and the buffers are exactly where an uninterrupted run
would have them, without a callback that must be remembered, and it also holds in plain training loops.
An update that accelerate skips (fp16 overflow) does not advance it, just as the Trainer then does not
advance the LR scheduler. Set `momentum_warmup_steps=0` for a constant momentum.

**Distributed.** This optimizer is not distributed itself: under DDP (`MULTI_GPU`) gradients arrive
already averaged and every rank performs the same update, which is mathematically nanochat's.
`sharded.py`'s `ShardedNanoChatMuonAdamW` is this optimizer with its state sharded across processes (DDP,
or FSDP2 where each rank holds parameter shards). `adamw_param_groups_for_fallback(model)` is the
AdamW-only fallback for FSDP1 / DeepSpeed, which hand the optimizer flat shards Muon cannot use.
"""

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim._muon import muon as muon_functional

from ..defaults import NEWTON_SCHULZ_STEPS
from ..errors import UserInputError
from .adamw_update import adamw_group_step
from .param_names import WRAPPER_SEGMENTS as _WRAPPER_SEGMENTS
from .param_names import generation2_parameter_names
from .schedule import muon_momentum


# nanochat generation-1 hyper-parameters (nanochat/muon.py, nanochat/gpt.py, scripts/base_train.py).
MATRIX_LR = 0.02
EMBEDDING_LR = 0.2
UNEMBEDDING_LR = 0.004
ADAM_BETAS = (0.8, 0.95)
ADAM_EPS = 1e-10
LR_REFERENCE_DIM = 768  # the width nanochat's AdamW LRs were tuned at
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = NEWTON_SCHULZ_STEPS
NS_EPS = 1e-7
MOMENTUM = 0.95
MOMENTUM_START = 0.85
MOMENTUM_WARMUP_STEPS = 300

MUON_GROUP_DEFAULTS: dict[str, Any] = {
    "lr": MATRIX_LR,
    "momentum_start": MOMENTUM_START,
    "momentum_end": MOMENTUM,
    "momentum_warmup_steps": MOMENTUM_WARMUP_STEPS,
    "nesterov": True,
    "ns_coefficients": NS_COEFFICIENTS,
    "ns_steps": NS_STEPS,
    "eps": NS_EPS,
    "step": 0,
}
ADAMW_GROUP_DEFAULTS: dict[str, Any] = {
    "lr": EMBEDDING_LR,
    "betas": ADAM_BETAS,
    "eps": ADAM_EPS,
    "weight_decay": 0.0,
    "foreach": None,
    "fused": None,
}
_GROUP_DEFAULTS = {"muon": MUON_GROUP_DEFAULTS, "adamw": ADAMW_GROUP_DEFAULTS}


class NanoChatMuonAdamW(Optimizer):
    """Muon (transformer matrices) + AdamW (embedding, lm_head) in one optimizer; see the module docstring.

    Args:
        params: param groups (dicts), each with `kind` ("muon" or "adamw") and `name`; missing
            hyper-parameters take nanochat G1's values for that kind. `build_optimizer(model)` makes them.
    """

    def __init__(self, params: Iterable[dict[str, Any]]):
        # No shared defaults: each kind fills its own in add_param_group.
        super().__init__(params, defaults={})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict) or param_group.get("kind") not in _GROUP_DEFAULTS:
            found = param_group.get("kind") if isinstance(param_group, dict) else type(param_group).__name__
            raise ValueError(
                f"NanoChatMuonAdamW: every param group must be a dict with kind 'muon' or 'adamw', got {found!r}"
            )
        param_group.setdefault("name", param_group["kind"])
        for key, value in _GROUP_DEFAULTS[param_group["kind"]].items():
            param_group.setdefault(key, value)
        if param_group["kind"] == "muon":
            params = param_group["params"]
            params = [params] if isinstance(params, torch.Tensor) else list(params)
            param_group["params"] = params
            for param in params:
                tensor = param[1] if isinstance(param, tuple) else param  # (name, tensor) pairs are allowed
                if tensor.ndim != 2:
                    raise ValueError(
                        f"NanoChatMuonAdamW: Muon group {param_group['name']!r} holds a parameter of shape "
                        f"{tuple(tensor.shape)}; Muon only updates 2-D matrices"
                    )
            # Visible (and logged) before the first update; rewritten from `step` at every update.
            param_group["momentum"] = self._scheduled_momentum(param_group)
        super().add_param_group(param_group)

    @staticmethod
    def _scheduled_momentum(group: dict[str, Any]) -> float:
        return muon_momentum(
            group["step"], group["momentum_start"], group["momentum_end"], group["momentum_warmup_steps"]
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

    def _muon_step(self, group: dict[str, Any]) -> None:
        # The counter advances even if no parameter of the group has a gradient: momentum follows the
        # global update index, as nanochat's μ(it) does.
        group["momentum"] = self._scheduled_momentum(group)
        group["step"] += 1
        params, grads, momentum_buffers = [], [], []
        for param in group["params"]:
            if param.grad is None:
                continue
            if param.grad.is_sparse:
                raise RuntimeError("NanoChatMuonAdamW does not support sparse gradients")
            state = self.state[param]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(param.grad, memory_format=torch.preserve_format)
            params.append(param)
            grads.append(param.grad)
            momentum_buffers.append(state["momentum_buffer"])
        if not params:
            return
        muon_functional(
            params,
            grads,
            momentum_buffers,
            lr=group["lr"],
            weight_decay=0.0,  # nanochat generation 1's Muon has no weight decay
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            ns_coefficients=group["ns_coefficients"],
            ns_steps=group["ns_steps"],
            eps=group["eps"],
            adjust_lr_fn="original",  # lr·√max(1, rows/cols), nanochat's Muon LR scaling
            has_complex=False,
        )

    def _adamw_step(self, group: dict[str, Any]) -> None:
        adamw_group_step(self.state, group, owner="NanoChatMuonAdamW")


def _routing_name(name: str) -> str:
    for segment in _WRAPPER_SEGMENTS:
        name = name.replace(segment, "")
    return name


def _route(name: str, param: nn.Parameter) -> str:
    """Which nanochat G1 optimizer group a parameter belongs to: "matrix", "embedding" or "unembedding"."""
    routing_name = _routing_name(name)
    if routing_name == "transformer.wte.weight":
        return "embedding"
    if routing_name == "lm_head.weight":
        return "unembedding"
    if routing_name.startswith("transformer.h."):
        if param.ndim != 2:
            raise UserInputError(
                f"parameter {name!r} has shape {tuple(param.shape)}: every parameter under transformer.h. must "
                "be a 2-D matrix for Muon (nanochat G1 has no biases, norm weights or scalars there)"
            )
        return "matrix"
    raise UserInputError(
        f"parameter {name!r} (shape {tuple(param.shape)}) has no route in nanochat G1's Muon+AdamW; expected "
        "only 2-D matrices under transformer.h., transformer.wte.weight and lm_head.weight"
    )


def _model_dim(model: nn.Module, model_dim: int | None) -> int:
    if model_dim is not None:
        return model_dim
    config = getattr(model, "config", None)
    for key in ("n_embd", "hidden_size"):
        if config is not None and getattr(config, key, None):
            return int(getattr(config, key))
    raise UserInputError("cannot read the model width from model.config.n_embd; pass model_dim=...")


def _refuse_generation_2(model: nn.Module) -> None:
    generation = getattr(getattr(model, "config", None), "generation", None)
    gen2_names = generation2_parameter_names(name for name, _ in model.named_parameters())
    if generation == 2 or gen2_names:
        found = "model.config.generation is 2" if generation == 2 else f"it has {', '.join(gen2_names[:3])}"
        raise UserInputError(
            f"model is a generation-2 nanochat ({found}): generation 1's Muon+AdamW has no groups for its "
            "parameters; use nanochat_hf.optim.build_gen2_optimizer (or build_gen2_training)"
        )


def _routed_parameters(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Trainable parameters by route, checking every parameter has a route and all three routes exist."""
    _refuse_generation_2(model)
    routes: dict[str, list[tuple[str, nn.Parameter]]] = {"matrix": [], "embedding": [], "unembedding": []}
    present = set()
    for name, param in model.named_parameters():
        route = _route(name, param)  # frozen parameters are checked too, then left out of the groups
        present.add(route)
        if param.requires_grad:
            routes[route].append((name, param))
    missing = [route for route in ("matrix", "embedding", "unembedding") if route not in present]
    if missing:
        expected = {
            "matrix": "transformer.h.* matrices",
            "embedding": "transformer.wte.weight",
            "unembedding": "lm_head.weight",
        }
        raise UserInputError(
            "model is not a nanochat G1 GPT: found no " + ", no ".join(expected[route] for route in missing)
        )
    return routes


def nanochat_param_groups(
    model: nn.Module,
    *,
    matrix_lr: float = MATRIX_LR,
    embedding_lr: float = EMBEDDING_LR,
    unembedding_lr: float = UNEMBEDDING_LR,
    weight_decay: float = 0.0,
    adam_betas: tuple[float, float] = ADAM_BETAS,
    adam_eps: float = ADAM_EPS,
    momentum: float = MOMENTUM,
    momentum_start: float = MOMENTUM_START,
    momentum_warmup_steps: int = MOMENTUM_WARMUP_STEPS,
    ns_steps: int = NS_STEPS,
    model_dim: int | None = None,
    fused: bool | None = None,
    foreach: bool | None = None,
) -> list[dict[str, Any]]:
    """nanochat G1's param groups for `NanoChatMuonAdamW` (Muon groups first, one per matrix shape)."""
    routes = _routed_parameters(model)
    dmodel_lr_scale = (_model_dim(model, model_dim) / LR_REFERENCE_DIM) ** -0.5
    by_shape: dict[tuple[int, int], list[tuple[str, nn.Parameter]]] = {}
    for name, param in routes["matrix"]:
        by_shape.setdefault(tuple(param.shape), []).append((name, param))
    groups: list[dict[str, Any]] = [
        {
            "kind": "muon",
            "name": f"muon_{rows}x{cols}",
            "params": named,
            "lr": matrix_lr,
            "momentum_start": momentum_start,
            "momentum_end": momentum,
            "momentum_warmup_steps": momentum_warmup_steps,
            "ns_steps": ns_steps,
        }
        for (rows, cols), named in sorted(by_shape.items())
    ]
    adamw_settings = {
        "betas": tuple(adam_betas),
        "eps": adam_eps,
        "weight_decay": weight_decay,
        "fused": fused,
        "foreach": foreach,
    }
    for route, base_lr in (("embedding", embedding_lr), ("unembedding", unembedding_lr)):
        if routes[route]:
            groups.append(
                {
                    "kind": "adamw",
                    "name": route,
                    "params": routes[route],
                    "lr": base_lr * dmodel_lr_scale,
                    **adamw_settings,
                }
            )
    return groups


def build_optimizer(model: nn.Module, **kwargs: Any) -> NanoChatMuonAdamW:
    """nanochat G1's optimizer for `model`, routing each parameter by name (see `nanochat_param_groups`).

    Keyword arguments: matrix_lr (0.02), embedding_lr (0.2), unembedding_lr (0.004) — the AdamW ones are
    multiplied by (d_model/768)^-0.5 —, weight_decay (0.0, AdamW only), adam_betas ((0.8, 0.95)),
    adam_eps (1e-10), momentum (0.95), momentum_start (0.85), momentum_warmup_steps (300), ns_steps (5),
    model_dim (default model.config.n_embd), fused / foreach (AdamW kernel choice).
    Raises `UserInputError` when a parameter has no route or the model lacks one of the three kinds.
    """
    return NanoChatMuonAdamW(nanochat_param_groups(model, **kwargs))


class NanoChatMuonAdamWFactory:
    """For `Trainer(optimizer_cls_and_kwargs=(NanoChatMuonAdamWFactory, {...}))`.

    transformers treats a first item that is not an Optimizer class as a factory and calls
    `factory()(model, **kwargs)`; that is `build_optimizer(model, **kwargs)` here.
    """

    def __call__(self, model: nn.Module, **kwargs: Any) -> NanoChatMuonAdamW:
        return build_optimizer(model, **kwargs)


def adamw_param_groups_for_fallback(
    model: nn.Module,
    *,
    matrix_lr: float = MATRIX_LR,
    embedding_lr: float = EMBEDDING_LR,
    unembedding_lr: float = UNEMBEDDING_LR,
    weight_decay: float = 0.0,
    adam_betas: tuple[float, float] = ADAM_BETAS,
    adam_eps: float = ADAM_EPS,
    model_dim: int | None = None,
) -> list[dict[str, Any]]:
    """Param groups for plain `torch.optim.AdamW`, for FSDP / DeepSpeed ZeRO where Muon cannot run.

    Same routing and LRs as `build_optimizer` (AdamW ones × (d/768)^-0.5). Caveat: nanochat has no
    AdamW-only recipe, so `matrix_lr` defaults to its *Muon* LR (0.02); Adam's per-element steps are far
    larger than Muon's orthogonalised ones, so a recipe using this fallback should set its own matrix_lr.
    Usage: `torch.optim.AdamW(adamw_param_groups_for_fallback(model), fused=...)`.
    """
    routes = _routed_parameters(model)
    dmodel_lr_scale = (_model_dim(model, model_dim) / LR_REFERENCE_DIM) ** -0.5
    settings = {"betas": tuple(adam_betas), "eps": adam_eps, "weight_decay": weight_decay}
    groups = [
        {"kind": "adamw", "name": "matrices", "params": routes["matrix"], "lr": matrix_lr, **settings},
        {
            "kind": "adamw",
            "name": "embedding",
            "params": routes["embedding"],
            "lr": embedding_lr * dmodel_lr_scale,
            **settings,
        },
        {
            "kind": "adamw",
            "name": "unembedding",
            "params": routes["unembedding"],
            "lr": unembedding_lr * dmodel_lr_scale,
            **settings,
        },
    ]
    return [group for group in groups if group["params"]]
