"""Which generation-2 parameter goes to which group of `NanoChatGen2MuonAdamW`, with nanochat's settings.

Parameters are routed by the last segments of their names (nanochat's key stems), so any module prefix
works (`resid_lambdas` or `transformer.resid_lambdas`), and so do the wrappers of `param_names.py`:

| group            | name stems                                                           |
|------------------|----------------------------------------------------------------------|
| `muon_RxC`       | `h.{i}.attn.{c_q,c_k,c_v,c_proj,ve_gate}.weight`, `h.{i}.mlp.{c_fc,c_proj}.weight` |
| `unembedding`    | `lm_head.weight`                                                     |
| `embedding`      | `wte.weight`                                                         |
| `value_embeds`   | `value_embeds.{i}.weight`                                            |
| `resid_lambdas`  | `resid_lambdas`                                                      |
| `x0_lambdas`     | `x0_lambdas`                                                         |
| `smear_backout`  | `smear_gate.weight`, `smear_lambda`, `backout_lambda`                |

A parameter matching none of them is an error naming it (nothing is silently left untrained). So is a
generation-1 model: it has none of the generation-2-only parameters (and `config.generation` is 1 where the
config says). Generation-2 features switched off in a config (no value embeddings, say) simply leave
their groups out. Frozen parameters are checked, then left out; trainable peft adapter tensors (LoRA
A/B, ...) are an error: they are not nanochat's parameters, so train them with the Trainer's optimizer.
"""

import re
from typing import Any

from torch import nn

from ..errors import UserInputError
from .muon_adamw_gen2 import NanoChatGen2MuonAdamW
from .param_names import generation2_parameter_names, is_adapter_parameter, routing_name
from .scaling_gen2 import gen2_group_lrs
from .schedule_gen2 import MOMENTUM_END, MOMENTUM_PEAK, MOMENTUM_START, MOMENTUM_WARMUP_STEPS, WARMDOWN_RATIO


ROUTES = (
    ("matrix", re.compile(r"(?:^|\.)h\.\d+\.(?:attn\.(?:c_q|c_k|c_v|c_proj|ve_gate)|mlp\.(?:c_fc|c_proj))\.weight$")),
    ("unembedding", re.compile(r"(?:^|\.)lm_head\.weight$")),
    ("embedding", re.compile(r"(?:^|\.)wte\.weight$")),
    ("value_embeds", re.compile(r"(?:^|\.)value_embeds\.\d+\.weight$")),
    ("resid_lambdas", re.compile(r"(?:^|\.)resid_lambdas$")),
    ("x0_lambdas", re.compile(r"(?:^|\.)x0_lambdas$")),
    ("smear_backout", re.compile(r"(?:^|\.)(?:smear_gate\.weight|smear_lambda|backout_lambda)$")),
)
REQUIRED_ROUTES = {"matrix": "block matrices h.{i}.*", "embedding": "wte.weight", "unembedding": "lm_head.weight"}
ADAM_EPS = 1e-10
# AdamW groups in nanochat's order: (betas, weight decay). Their LRs come from `gen2_group_lrs`.
ADAMW_GROUPS = {
    "unembedding": ((0.8, 0.96), 0.01),
    "embedding": ((0.8, 0.995), 0.001),
    "value_embeds": ((0.8, 0.995), 0.01),
    "resid_lambdas": ((0.8, 0.95), 0.05),
    "x0_lambdas": ((0.96, 0.95), 0.0),
    "smear_backout": ((0.8, 0.95), 0.0),
}


def route_gen2(name: str, param: nn.Parameter) -> str:
    """The route of one parameter ("matrix" or an AdamW group name); `UserInputError` if it has none."""
    stem = routing_name(name)
    for route, pattern in ROUTES:
        if pattern.search(stem):
            if route == "matrix" and param.ndim != 2:
                raise UserInputError(
                    f"parameter {name!r} has shape {tuple(param.shape)}; Muon needs 2-D block matrices"
                )
            return route
    raise UserInputError(
        f"parameter {name!r} (shape {tuple(param.shape)}) has no group in nanochat generation 2's MuonAdamW; "
        "expected only block matrices (h.{i}.attn.{c_q,c_k,c_v,c_proj,ve_gate}.weight, h.{i}.mlp.{c_fc,c_proj}.weight), "
        "wte.weight, lm_head.weight, value_embeds.{i}.weight, resid_lambdas, x0_lambdas, smear_gate.weight, "
        "smear_lambda, backout_lambda"
    )


def _check_generation(model: nn.Module, names: list[str]) -> None:
    generation = getattr(getattr(model, "config", None), "generation", None)
    if generation is not None and generation != 2:
        raise UserInputError(
            f"model.config.generation is {generation!r}: the generation-2 optimizer is for nanochat's 2026 model; "
            "use nanochat_hf.optim.build_optimizer for generation 1"
        )
    # A generation-2 config is authoritative (its features may all be switched off); without a config
    # the parameters decide.
    if generation is None and not generation2_parameter_names(names):
        raise UserInputError(
            "model has none of generation 2's parameters (resid_lambdas, x0_lambdas, value_embeds.*, ve_gate, "
            "smear_gate, smear_lambda, backout_lambda): it looks like a generation-1 nanochat; use "
            "nanochat_hf.optim.build_optimizer for it"
        )


def routed_gen2_parameters(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Trainable parameters by route, after checking every parameter and the model's generation."""
    named = list(model.named_parameters())
    _check_generation(model, [name for name, _ in named])
    routes: dict[str, list[tuple[str, nn.Parameter]]] = {route: [] for route, _ in ROUTES}
    present = set()
    for name, param in named:
        if is_adapter_parameter(name):
            if param.requires_grad:
                raise UserInputError(
                    f"parameter {name!r} is a peft adapter tensor, not a nanochat parameter: train adapters with the "
                    "Trainer's own optimizer (optimizer: trainer), or merge them before using nanochat's"
                )
            continue
        route = route_gen2(name, param)  # frozen parameters are checked too, then left out
        present.add(route)
        if param.requires_grad:
            routes[route].append((name, param))
    missing = [what for route, what in REQUIRED_ROUTES.items() if route not in present]
    if missing:
        raise UserInputError("model is not a nanochat generation-2 GPT: found no " + ", no ".join(missing))
    return routes


def count_gen2_scaling_params(model: nn.Module) -> int:
    """nanochat's scaling parameters of a model: its block matrices + lm_head (frozen ones included;
    a peft `modules_to_save` copy and its original count once)."""
    counted = {}
    for name, param in model.named_parameters():
        if not is_adapter_parameter(name) and route_gen2(name, param) in ("matrix", "unembedding"):
            counted[routing_name(name)] = param.numel()
    return sum(counted.values())


def gen2_model_dim(model: nn.Module) -> int:
    """The model width: config.n_embd (or hidden_size), else the embedding's width."""
    config = getattr(model, "config", None)
    for key in ("n_embd", "hidden_size"):
        if config is not None and getattr(config, key, None):
            return int(getattr(config, key))
    for name, param in model.named_parameters():
        if not is_adapter_parameter(name) and route_gen2(name, param) == "embedding":
            return int(param.shape[1])
    raise UserInputError("cannot find the model width: no config.n_embd and no wte.weight")


def gen2_param_groups(
    model: nn.Module,
    *,
    matrix_lr: float = 0.02,
    embedding_lr: float = 0.3,
    unembedding_lr: float = 0.008,
    scalar_lr: float = 0.5,
    smear_lr: float = 0.2,
    batch_lr_scale: float = 1.0,
    lr_multiplier: float = 1.0,
    weight_decay: float = 0.28,
    weight_decay_schedule: str = "cosine",
    num_iterations: int | None = None,
    momentum_start: float = MOMENTUM_START,
    momentum_peak: float = MOMENTUM_PEAK,
    momentum_warmup_steps: int = MOMENTUM_WARMUP_STEPS,
    momentum_end: float = MOMENTUM_END,
    momentum_warmdown_ratio: float = WARMDOWN_RATIO,
    ns_steps: int = 5,
    beta2: float = 0.9,
    ortho_dtype: str = "auto",
    group_overrides: dict[str, dict[str, Any]] | None = None,
    model_dim: int | None = None,
) -> list[dict[str, Any]]:
    """nanochat 2026's param groups (Muon groups first, one per matrix shape, then the AdamW groups).

    LRs are the un-scaled ones; `batch_lr_scale` multiplies all but the smear/backout group, the AdamW
    ones also get (d/768)^-0.5, and `lr_multiplier` scales every group (SFT's init_lr_frac).
    `weight_decay` is Muon's peak (scaled by the plan for a full run); `group_overrides` maps a group
    name (or "muon" for all Muon groups) to fields to replace, e.g. {"embedding": {"betas": (0.8, 0.99)}}.
    """
    routes = routed_gen2_parameters(model)
    lrs = gen2_group_lrs(
        model_dim or gen2_model_dim(model),
        batch_lr_scale=batch_lr_scale,
        matrix_lr=matrix_lr,
        embedding_lr=embedding_lr,
        unembedding_lr=unembedding_lr,
        scalar_lr=scalar_lr,
        smear_lr=smear_lr,
    )
    overrides = dict(group_overrides or {})
    known = {"muon", *ADAMW_GROUPS}
    if set(overrides) - known:
        raise UserInputError(
            f"group_overrides: unknown group(s) {sorted(set(overrides) - known)}; expected some of {sorted(known)}"
        )

    by_shape: dict[tuple[int, int], list[tuple[str, nn.Parameter]]] = {}
    for name, param in routes["matrix"]:
        by_shape.setdefault(tuple(param.shape), []).append((name, param))
    groups: list[dict[str, Any]] = []
    for (rows, cols), named in sorted(by_shape.items()):
        groups.append(
            {
                "kind": "muon",
                "name": f"muon_{rows}x{cols}",
                "params": named,
                "lr": lrs["muon"] * lr_multiplier,
                "beta2": beta2,
                "ns_steps": ns_steps,
                "initial_weight_decay": weight_decay,
                "weight_decay_schedule": weight_decay_schedule,
                "num_iterations": num_iterations,
                "momentum_start": momentum_start,
                "momentum_peak": momentum_peak,
                "momentum_warmup_steps": momentum_warmup_steps,
                "momentum_end": momentum_end,
                "momentum_warmdown_ratio": momentum_warmdown_ratio,
                "ortho_dtype": ortho_dtype,
                **overrides.get("muon", {}),
            }
        )
    for name, (betas, group_weight_decay) in ADAMW_GROUPS.items():
        if routes[name]:
            groups.append(
                {
                    "kind": "adamw",
                    "name": name,
                    "params": routes[name],
                    "lr": lrs[name] * lr_multiplier,
                    "betas": betas,
                    "eps": ADAM_EPS,
                    "weight_decay": group_weight_decay,
                    **overrides.get(name, {}),
                }
            )
    return groups


def build_gen2_optimizer(
    model: nn.Module, *, stack_matrices: bool = True, compile: bool = False, **group_settings: Any
) -> NanoChatGen2MuonAdamW:
    """nanochat generation 2's optimizer for `model` (keyword arguments: see `gen2_param_groups`).

    For a full run with the batch/LR/weight-decay scaling and the schedule, use `build_gen2_training`.
    Raises `UserInputError` for an unroutable parameter, a generation-1 model or a bad hyper-parameter.
    """
    return NanoChatGen2MuonAdamW(
        gen2_param_groups(model, **group_settings), stack_matrices=stack_matrices, compile=compile
    )


class NanoChatGen2MuonAdamWFactory:
    """For `Trainer(optimizer_cls_and_kwargs=(NanoChatGen2MuonAdamWFactory, {...}))`: transformers calls
    `factory()(model, **kwargs)`, which is `build_gen2_optimizer(model, **kwargs)`."""

    def __call__(self, model: nn.Module, **kwargs: Any) -> NanoChatGen2MuonAdamW:
        return build_gen2_optimizer(model, **kwargs)
