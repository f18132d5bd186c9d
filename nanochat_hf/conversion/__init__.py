"""Converters between the three folder formats a nanochat model can live in.

- `nanochat`: Karpathy's own checkpoint folder (`model_NNNNNN.pt` + `meta_NNNNNN.json`).
- `native`: transformers' built-in `NanoChatForCausalLM` (`model_type: "nanochat"`), loads without remote code.
- `hf`: this package's format (`model_type: "nanochat_hf"`), with its code in the folder for `trust_remote_code`.
"""

from ..formats import detect_format
from .convert import convert
from .nanochat_checkpoint import load_nanochat_checkpoint
from .native import config_from_native, config_to_native, state_dict_from_native, state_dict_to_native


__all__ = [
    "convert",
    "detect_format",
    "load_nanochat_checkpoint",
    "config_from_native",
    "config_to_native",
    "state_dict_from_native",
    "state_dict_to_native",
]
