"""One call from a recipe's settings to a generation-2 optimizer, its LR schedule and the run's numbers.

    training = build_gen2_training(model, {"target_param_data_ratio": 8})   # a mapping or Gen2Settings
    training.plan.total_batch_size, training.plan.num_iterations            # 1,048,576 and 5,568 at d24
    training_args = TrainingArguments(..., **training.trainer_arguments())   # max_steps, max_grad_norm 0
    trainer.create_optimizer -> training.optimizer
    trainer.create_scheduler(n, optimizer) -> training.create_scheduler(optimizer, n)
    print(training.describe(flops_per_token=...))                            # for --dry-run

The model's scaling parameters are counted from its own parameters (block matrices + lm_head, as
nanochat's `num_scaling_params`); the d12 reference is counted in closed form with the settings' aspect
ratio and head size and the model's vocabulary and value-embedding gate width, as nanochat builds it.
Generation 2 does not clip gradients, hence `max_grad_norm` 0 in `trainer_arguments()`.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .muon_adamw_gen2 import NanoChatGen2MuonAdamW
from .param_groups_gen2 import (
    build_gen2_optimizer,
    count_gen2_scaling_params,
    gen2_model_dim,
    route_gen2,
    routed_gen2_parameters,
)
from .param_names import is_adapter_parameter, routing_name
from .scaling_gen2 import Gen2Plan, Gen2Settings, gen2_scaling_params, plan_gen2
from .schedule_gen2 import get_gen2_schedule, get_gen2_sft_schedule


@dataclass
class Gen2Training:
    optimizer: NanoChatGen2MuonAdamW
    plan: Gen2Plan
    settings: Gen2Settings

    def create_scheduler(self, optimizer=None, num_training_steps: int | None = None) -> LambdaLR:
        """The run's LambdaLR (pretraining or SFT shape) over `optimizer` (default: this one)."""
        return self.schedule_factory()(
            optimizer if optimizer is not None else self.optimizer,
            num_training_steps or self.plan.num_iterations,
        )

    def schedule_factory(self):
        """`f(optimizer, num_training_steps) -> LambdaLR`, for a Trainer's `create_scheduler`."""
        s = self.settings
        if s.sft:
            return partial(
                get_gen2_sft_schedule,
                warmup_ratio=s.warmup_ratio,
                warmdown_ratio=s.warmdown_ratio,
                final_lr_frac=s.final_lr_frac,
            )
        return partial(
            get_gen2_schedule,
            warmup_steps=s.warmup_steps,
            warmdown_ratio=s.warmdown_ratio,
            final_lr_frac=s.final_lr_frac,
        )

    def trainer_arguments(self) -> dict:
        """The `TrainingArguments` fields this plan decides."""
        return {"max_steps": self.plan.num_iterations, "max_grad_norm": 0.0}

    def describe(self, flops_per_token: float | None = None) -> str:
        """The parameter groups and the run's numbers, as lines a person can read (dry runs)."""
        plan = self.plan
        lines = [
            f"scaling params (matrices + lm_head): {plan.scaling_params:,}   d{self.settings.reference_depth} "
            f"reference: {plan.reference_scaling_params:,}",
            f"total batch: {plan.total_batch_size:,} tokens   batch LR scale: {plan.batch_lr_scale:.6f}",
            f"updates: {plan.num_iterations:,} (from {plan.horizon_source})   tokens: {plan.total_tokens:,} "
            f"({plan.tokens_per_scaling_param:.2f} per scaling param)",
            f"Muon weight decay: {plan.weight_decay:.6f} (cosine to 0)   gradient clipping: none",
        ]
        if flops_per_token:
            lines.append(f"FLOPs: {flops_per_token:,.0f} per token, {flops_per_token * plan.total_tokens:.4e} in all")
        lines.append("parameter groups:")
        for group in self.optimizer.param_groups:
            count = sum(p.numel() for p in group["params"])
            head = f"  {group['name']:<16} {group['kind']:<5} {len(group['params']):>3} tensors {count:>15,} params  lr {group['lr']:.6g}"
            if group["kind"] == "muon":
                head += (
                    f"  momentum {group['momentum_start']}->{group['momentum_peak']}->{group['momentum_end']}"
                    f"  beta2 {group['beta2']}  wd {group['initial_weight_decay']:.6g} ({group['weight_decay_schedule']})"
                )
            else:
                head += f"  betas {tuple(group['betas'])}  eps {group['eps']:g}  wd {group['weight_decay']:g}"
            lines.append(head)
        return "\n".join(lines)


def reference_scaling_params(model: nn.Module, settings: Gen2Settings) -> int:
    """The d12 reference's scaling parameters with this model's vocabulary and value-embedding gate width."""
    vocab_rows, gate_channels = None, None
    for name, param in model.named_parameters():
        if is_adapter_parameter(name):
            continue
        route = route_gen2(name, param)
        if route == "unembedding":
            vocab_rows = param.shape[0]
        elif route == "matrix" and routing_name(name).endswith("ve_gate.weight"):
            gate_channels = param.shape[1]
    return gen2_scaling_params(
        settings.reference_depth,
        aspect_ratio=settings.aspect_ratio,
        head_dim=settings.head_dim,
        vocab_size=vocab_rows,
        pad_vocab_to=1,  # lm_head's rows are already padded
        **({"ve_gate_channels": gate_channels} if gate_channels else {}),
    )


def build_gen2_training(
    model: nn.Module,
    settings: Gen2Settings | Mapping | None = None,
    *,
    flops_per_token: float | None = None,
    total_batch_size: int | None = None,
    stack_matrices: bool = True,
    compile: bool = False,
) -> Gen2Training:
    """The generation-2 optimizer (scaled LRs and weight decay, schedules set), plan and LR schedule.

    `settings`: `Gen2Settings`, a mapping of its fields (unknown keys are an error) or None (nanochat's
    defaults). `flops_per_token` is needed only for a `target_flops` horizon; `total_batch_size` for SFT
    (the pretraining run's). All checks run before any optimizer state is allocated.
    """
    if settings is None:
        settings = Gen2Settings()
    elif isinstance(settings, Mapping):
        settings = Gen2Settings.from_mapping(settings)
    routed_gen2_parameters(model)  # generation, routes and adapters checked first
    model_dim = gen2_model_dim(model)
    plan = plan_gen2(
        settings,
        scaling_params=count_gen2_scaling_params(model),
        reference_scaling_params=reference_scaling_params(model, settings),
        model_dim=model_dim,
        flops_per_token=flops_per_token,
        total_batch_size=total_batch_size,
    )
    optimizer = build_gen2_optimizer(
        model,
        stack_matrices=stack_matrices,
        compile=compile,
        **settings.base_lrs(),
        batch_lr_scale=plan.batch_lr_scale,
        lr_multiplier=settings.init_lr_frac,
        weight_decay=plan.weight_decay,
        num_iterations=plan.num_iterations,
        momentum_start=settings.momentum_start,
        momentum_peak=settings.momentum_peak,
        momentum_warmup_steps=settings.momentum_warmup_steps,
        momentum_end=settings.momentum_end,
        # SFT's momentum only warms up; pretraining's also warms down with the LR.
        momentum_warmdown_ratio=0.0 if settings.sft else settings.warmdown_ratio,
        group_overrides=settings.group_overrides,
        model_dim=model_dim,
    )
    return Gen2Training(optimizer=optimizer, plan=plan, settings=settings)
