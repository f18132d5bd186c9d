"""Registration of this package's model with transformers' Auto classes (importing this module does it).

After the import, `AutoConfig`, `AutoModel` and `AutoModelForCausalLM` know `model_type="nanochat_hf"` in
this process, and saved checkpoints name their own code in `config.json["auto_map"]`, so the Hub copy runs
with `trust_remote_code=True` where this package is not installed. Registering twice is harmless.
Every part of the package that loads or saves a model imports this module; `import nanochat_hf` alone does
not (it stays free of torch and transformers, so the command line starts fast), but touching any of its
model classes (`nanochat_hf.NanoChatHFForCausalLM`, ...) does.
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


AutoConfig.register(NanoChatHFConfig.model_type, NanoChatHFConfig, exist_ok=True)
AutoModel.register(NanoChatHFConfig, NanoChatHFModel, exist_ok=True)
AutoModelForCausalLM.register(NanoChatHFConfig, NanoChatHFForCausalLM, exist_ok=True)

NanoChatHFConfig.register_for_auto_class()
NanoChatHFModel.register_for_auto_class("AutoModel")
NanoChatHFForCausalLM.register_for_auto_class("AutoModelForCausalLM")

EXPORTED = {
    "NanoChatHFConfig": NanoChatHFConfig,
    "NanoChatHFModel": NanoChatHFModel,
    "NanoChatHFForCausalLM": NanoChatHFForCausalLM,
    "NanoChatHFPreTrainedModel": NanoChatHFPreTrainedModel,
    # Names of earlier versions, the same classes (renamed so they no longer collide with transformers' own).
    "NanoChatConfig": NanoChatConfig,
    "NanoChatModel": NanoChatModel,
    "NanoChatForCausalLM": NanoChatForCausalLM,
    "NanoChatPreTrainedModel": NanoChatPreTrainedModel,
}
