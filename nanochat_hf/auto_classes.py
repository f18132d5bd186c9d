"""Registration of this package's model with transformers' Auto classes (importing this module does it).

After the import, `AutoConfig`, `AutoModel` and `AutoModelForCausalLM` know `model_type="nanochat_hf"` in
this process, and saved checkpoints name their own code in `config.json["auto_map"]`, so the Hub copy runs
with `trust_remote_code=True` where this package is not installed. Registering twice is harmless.
Every part of the package that loads or saves a model imports this module; `import nanochat_hf` alone does
not (it stays free of torch and transformers, so the command line starts fast), but touching any of its
model classes (`nanochat_hf.NanoChatForCausalLM`, ...) does.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_nanochat_hf import NanoChatConfig
from .modeling_nanochat_hf import NanoChatForCausalLM, NanoChatModel, NanoChatPreTrainedModel


AutoConfig.register(NanoChatConfig.model_type, NanoChatConfig, exist_ok=True)
AutoModel.register(NanoChatConfig, NanoChatModel, exist_ok=True)
AutoModelForCausalLM.register(NanoChatConfig, NanoChatForCausalLM, exist_ok=True)

NanoChatConfig.register_for_auto_class()
NanoChatModel.register_for_auto_class("AutoModel")
NanoChatForCausalLM.register_for_auto_class("AutoModelForCausalLM")

EXPORTED = {
    "NanoChatConfig": NanoChatConfig,
    "NanoChatModel": NanoChatModel,
    "NanoChatForCausalLM": NanoChatForCausalLM,
    "NanoChatPreTrainedModel": NanoChatPreTrainedModel,
}
