"""nanochat-hf: nanochat's GPT, tokenizer and training recipe on the Hugging Face stack.

Importing the package registers the model with transformers' Auto classes, so
`AutoConfig`, `AutoModel` and `AutoModelForCausalLM` know `model_type="nanochat_hf"` in this process.
Checkpoints saved by this package also carry their own code (`auto_map`), so they load with
`trust_remote_code=True` where the package is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_nanochat_hf import NanoChatConfig, NanoChatHFConfig
from .modeling_nanochat_hf import (
    NanoChatForCausalLM,
    NanoChatHFForCausalLM,
    NanoChatHFModel,
    NanoChatHFPreTrainedModel,
    NanoChatModel,
    NanoChatPreTrainedModel,
)


__version__ = "0.1.0.dev0"

AutoConfig.register(NanoChatHFConfig.model_type, NanoChatHFConfig, exist_ok=True)
AutoModel.register(NanoChatHFConfig, NanoChatHFModel, exist_ok=True)
AutoModelForCausalLM.register(NanoChatHFConfig, NanoChatHFForCausalLM, exist_ok=True)

# Saved checkpoints name their own code in `config.json["auto_map"]`, so the Hub copy runs anywhere.
NanoChatHFConfig.register_for_auto_class()
NanoChatHFModel.register_for_auto_class("AutoModel")
NanoChatHFForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "NanoChatHFConfig",
    "NanoChatHFModel",
    "NanoChatHFForCausalLM",
    "NanoChatHFPreTrainedModel",
    # Names of earlier versions, the same classes (renamed so they no longer collide with transformers' own).
    "NanoChatConfig",
    "NanoChatModel",
    "NanoChatForCausalLM",
    "NanoChatPreTrainedModel",
]
