"""Generation 2 (nanochat 2026) in the pretraining recipe: its settings, its plan as the run's horizon, its summary.

`run_pretraining` builds nanochat 2026's optimizer plan from the recipe (`gen2_settings`) on a meta-device
copy of the model before anything large is allocated; the Trainer builds the same optimizer again on the
real model (`stage.NanoChatTrainerMixin`, `gen2_settings=`).
"""

from transformers import TrainingArguments

from ..optim.scaling_gen2 import Gen2Settings
from ..optim.setup_gen2 import Gen2Training
from ..planning.horizon import Horizon
from .arguments import PretrainArguments


def gen2_settings(args: PretrainArguments, training_args: TrainingArguments) -> Gen2Settings:
    """Generation 2's optimizer and horizon settings from the recipe (`max_steps` > 0 fixes the updates)."""
    return Gen2Settings(
        target_param_data_ratio=args.target_param_data_ratio,
        total_batch_size=args.total_batch_size,
        num_iterations=training_args.max_steps if training_args.max_steps > 0 else -1,
        matrix_lr=args.matrix_lr,
        embedding_lr=args.embedding_lr,
        unembedding_lr=args.unembedding_lr,
        scalar_lr=args.scalar_lr,
        weight_decay=args.muon_weight_decay,
        warmup_steps=args.lr_warmup_steps,
        warmdown_ratio=args.warmdown_ratio,
        final_lr_frac=args.final_lr_frac,
    )


def horizon_of_gen2_plan(training: Gen2Training, num_params: int, flops: int) -> Horizon:
    """Generation 2's plan as the run's Horizon (its total batch, updates and what decided them)."""
    plan = training.plan
    source = {"num_iterations": "max_steps"}.get(plan.horizon_source, plan.horizon_source)
    target = {
        "max_steps": plan.num_iterations,
        "target_flops": training.settings.target_flops,
        "target_param_data_ratio": training.settings.target_param_data_ratio,
    }[source]
    return Horizon(
        num_params=num_params,
        total_batch_size=plan.total_batch_size,
        steps=plan.num_iterations,
        source=source,
        target=target,
        flops_per_token=flops,
        scaling_params=plan.scaling_params,
    )


def describe_gen2_optimizer(gen2: Gen2Training) -> dict:
    """The run-settings section of a generation-2 optimizer (printed, and written into the model card)."""
    plan, settings = gen2.plan, gen2.settings
    return {
        "kind": "generation 2 MuonAdamW (Polar Express, NorMuon, cautious weight decay)",
        **{f"{name}_lr": round(lr, 8) for name, lr in plan.group_lrs.items()},
        "unscaled_lrs": settings.base_lrs(),  # the recipe's LRs before the batch and width scales (SFT inherits them)
        "batch_lr_scale": round(plan.batch_lr_scale, 6),
        "muon_weight_decay": round(plan.weight_decay, 6),
        "scaling_params": plan.scaling_params,
        "warmup_steps": settings.warmup_steps,
        "warmdown_ratio": settings.warmdown_ratio,
        "final_lr_frac": settings.final_lr_frac,
        "max_grad_norm": 0.0,
    }
