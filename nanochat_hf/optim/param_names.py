"""Parameter names as nanochat would write them, under the wrappers that rename them.

torch.compile, DDP, FSDP1 and activation checkpointing insert a path segment into every parameter name;
peft prefixes `base_model.model.`, moves a wrapped layer's own weight under `base_layer.` and keeps the
trainable copy of a `modules_to_save` module under `modules_to_save.<adapter>.` (its frozen original under
`original_module.`). Routing looks through all of them; LoRA's own adapter matrices are not nanochat
parameters and are reported as such.
"""

import re


WRAPPER_SEGMENTS = ("_orig_mod.", "module.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
_WRAPPERS = {segment.rstrip(".") for segment in WRAPPER_SEGMENTS}
_PEFT_LAYER_SEGMENTS = {"base_layer", "original_module"}
# peft's tuners name their tensors with a prefix of their own: lora_A/B, lora_embedding_A/B,
# lora_magnitude_vector (DoRA), hada_w1_a (LoHa), lokr_w1 (LoKr), ia3_l, oft_r, boft_R, vera_lambda_b, ...
_ADAPTER_SEGMENT = re.compile(r"(?:^|\.)(?:lora|hada|lokr|ia3|oft|boft|vera)_\w*(?:\.|$)")

# Parameters only generation 2 has (generation 1 has none of them).
GEN2_ONLY_STEMS = re.compile(
    r"(?:^|\.)(?:resid_lambdas|x0_lambdas|smear_lambda|backout_lambda|smear_gate\.weight"
    r"|value_embeds\.\d+\.weight|attn\.ve_gate\.weight)$"
)


def routing_name(name: str) -> str:
    """`name` without wrapper segments or peft's renaming (see the module docstring)."""
    segments = [segment for segment in name.split(".") if segment not in _WRAPPERS]
    if segments[:2] == ["base_model", "model"]:
        segments = segments[2:]
    kept, skip_next = [], False
    for segment in segments:
        if skip_next:  # the adapter name after `modules_to_save`
            skip_next = False
        elif segment == "modules_to_save":
            skip_next = True
        elif segment not in _PEFT_LAYER_SEGMENTS:
            kept.append(segment)
    return ".".join(kept)


def is_adapter_parameter(name: str) -> bool:
    """True for a peft adapter's own tensors (LoRA A/B, LoHa, LoKr, IA3, OFT, ...)."""
    return bool(_ADAPTER_SEGMENT.search(routing_name(name)))


def generation2_parameter_names(names) -> list[str]:
    """The names among `names` that only a generation-2 nanochat has."""
    return [name for name in names if GEN2_ONLY_STEMS.search(routing_name(name))]
