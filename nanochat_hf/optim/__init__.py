"""nanochat generation-1 optimizer (Muon + AdamW in one `torch.optim.Optimizer`) and schedules."""

from .muon_adamw import (
    NanoChatMuonAdamW,
    NanoChatMuonAdamWFactory,
    adamw_param_groups_for_fallback,
    build_optimizer,
    nanochat_param_groups,
)
from .schedule import get_nanochat_schedule, muon_momentum, nanochat_lr_multiplier


__all__ = [
    "NanoChatMuonAdamW",
    "NanoChatMuonAdamWFactory",
    "adamw_param_groups_for_fallback",
    "build_optimizer",
    "get_nanochat_schedule",
    "muon_momentum",
    "nanochat_lr_multiplier",
    "nanochat_param_groups",
]
