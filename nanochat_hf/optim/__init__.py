"""nanochat's optimizers (Muon + AdamW in one `torch.optim.Optimizer`) and schedules.

Generation 1 (2025): `NanoChatMuonAdamW`, `build_optimizer`, `get_nanochat_schedule`.
Generation 2 (2026): `NanoChatGen2MuonAdamW`, `build_gen2_optimizer`, `get_gen2_schedule`, and
`build_gen2_training` (optimizer + schedule + batch/LR/weight-decay scaling from a recipe's settings).
"""

from .muon_adamw import (
    NanoChatMuonAdamW,
    NanoChatMuonAdamWFactory,
    adamw_param_groups_for_fallback,
    build_optimizer,
    nanochat_param_groups,
)
from .muon_adamw_gen2 import NanoChatGen2MuonAdamW
from .param_groups_gen2 import (
    NanoChatGen2MuonAdamWFactory,
    build_gen2_optimizer,
    count_gen2_scaling_params,
    gen2_param_groups,
)
from .scaling_gen2 import Gen2Plan, Gen2Settings, gen2_scaling_params, plan_gen2, plan_gen2_depth
from .schedule import get_nanochat_schedule, muon_momentum, nanochat_lr_multiplier
from .schedule_gen2 import (
    gen2_lr_multiplier,
    gen2_muon_momentum,
    gen2_muon_weight_decay,
    get_gen2_schedule,
    get_gen2_sft_schedule,
    sft_lr_multiplier,
)
from .setup_gen2 import Gen2Training, build_gen2_training


__all__ = [
    "Gen2Plan",
    "Gen2Settings",
    "Gen2Training",
    "NanoChatGen2MuonAdamW",
    "NanoChatGen2MuonAdamWFactory",
    "NanoChatMuonAdamW",
    "NanoChatMuonAdamWFactory",
    "adamw_param_groups_for_fallback",
    "build_gen2_optimizer",
    "build_gen2_training",
    "build_optimizer",
    "count_gen2_scaling_params",
    "gen2_lr_multiplier",
    "gen2_muon_momentum",
    "gen2_muon_weight_decay",
    "gen2_param_groups",
    "gen2_scaling_params",
    "get_gen2_schedule",
    "get_gen2_sft_schedule",
    "get_nanochat_schedule",
    "muon_momentum",
    "nanochat_lr_multiplier",
    "nanochat_param_groups",
    "plan_gen2",
    "plan_gen2_depth",
    "sft_lr_multiplier",
]
