"""nanochat-hf: nanochat's GPT, tokenizer and training recipe on the Hugging Face stack.

`import nanochat_hf` is cheap: it imports neither torch nor transformers, so `nanochat-hf --help` and
`nanochat-hf plan` answer at once. The model classes are attributes resolved on first use
(`from nanochat_hf import NanoChatHFForCausalLM`); that first use also registers the model with
transformers' Auto classes (`nanochat_hf.auto_classes`), so `AutoConfig`, `AutoModel` and
`AutoModelForCausalLM` know `model_type="nanochat_hf"` in this process. `nanochat_hf.register_auto_classes()`
does only the registering. Checkpoints saved by this package also carry their own code (`auto_map`), so
they load with `trust_remote_code=True` where the package is not installed.
"""

import importlib

from . import quiet


__version__ = "0.1.0.dev0"

MODEL_CLASSES = (
    "NanoChatHFConfig",
    "NanoChatHFModel",
    "NanoChatHFForCausalLM",
    "NanoChatHFPreTrainedModel",
    # Names of earlier versions, the same classes (renamed so they no longer collide with transformers' own).
    "NanoChatConfig",
    "NanoChatModel",
    "NanoChatForCausalLM",
    "NanoChatPreTrainedModel",
)
__all__ = [*MODEL_CLASSES, "register_auto_classes"]

quiet.silence_unused_kernel_notices()


def register_auto_classes() -> None:
    """Register the model with transformers' Auto classes (imports torch and transformers)."""
    importlib.import_module("nanochat_hf.auto_classes")


def __getattr__(name: str):
    # The model classes are imported on first use (PEP 562), keeping torch out of `import nanochat_hf`.
    if name in MODEL_CLASSES:
        return importlib.import_module("nanochat_hf.auto_classes").EXPORTED[name]
    raise AttributeError(f"module 'nanochat_hf' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
