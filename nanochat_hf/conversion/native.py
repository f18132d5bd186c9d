"""Mapping to and from transformers' built-in NanoChat port (`transformers.NanoChatForCausalLM`).

The built-in port has the same math with Llama-style names. Two details need care:
- Rotary tables: the port computes cos/sin in float32. nanochat rounds them to bfloat16. A model
  with `rotary_dtype="bfloat16"` therefore cannot be exported exactly (we warn); importing always gives
  `rotary_dtype="float32"` unless the file records the original choice (our exports do, under
  `nanochat_hf_rotary_dtype`, so hf -> native -> hf restores the config exactly).
- RMSNorm epsilon: carried over as `rms_norm_eps` in both directions.
"""

import re
import warnings

from ..configuration_nanochat_hf import NanoChatHFConfig


# ours -> native, per layer; the embedding and head are handled separately.
LAYER_KEY_MAP = {
    "attn.c_q": "self_attn.q_proj",
    "attn.c_k": "self_attn.k_proj",
    "attn.c_v": "self_attn.v_proj",
    "attn.c_proj": "self_attn.o_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
ROTARY_DTYPE_KEY = "nanochat_hf_rotary_dtype"
OURS_LAYER = re.compile(
    r"^transformer\.h\.(\d+)\.(attn\.c_q|attn\.c_k|attn\.c_v|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$"
)
NATIVE_LAYER = re.compile(r"^model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.fc1|mlp\.fc2)\.weight$")
NATIVE_TO_OURS = {v: k for k, v in LAYER_KEY_MAP.items()}


def key_to_native(key: str) -> str:
    if key == "transformer.wte.weight":
        return "model.embed_tokens.weight"
    if key == "lm_head.weight":
        return key
    match = OURS_LAYER.match(key)
    if match is None:
        raise KeyError(key)
    return f"model.layers.{match.group(1)}.{LAYER_KEY_MAP[match.group(2)]}.weight"


def key_from_native(key: str) -> str:
    if key == "model.embed_tokens.weight":
        return "transformer.wte.weight"
    if key == "lm_head.weight":
        return key
    match = NATIVE_LAYER.match(key)
    if match is None:
        raise KeyError(key)
    return f"transformer.h.{match.group(1)}.{NATIVE_TO_OURS[match.group(2)]}.weight"


def state_dict_to_native(state_dict: dict) -> dict:
    return {key_to_native(k): v for k, v in state_dict.items()}


def state_dict_from_native(state_dict: dict) -> dict:
    return {key_from_native(k): v for k, v in state_dict.items()}


def config_to_native(config: NanoChatHFConfig, warn: bool = True):
    """A `transformers.NanoChatConfig` computing the same function (exactly, if rotary is float32)."""
    if config.uses_generation2_features:
        raise ValueError(
            "a generation-2 model (value embeddings, sliding windows, per-layer scalars, smear, backout, padded "
            "vocabulary) cannot be represented by transformers' built-in NanoChat"
        )
    from transformers import NanoChatConfig as NativeConfig

    if warn and config.rotary_dtype != "float32":
        warnings.warn(
            f"Exporting a model with rotary_dtype={config.rotary_dtype!r}: transformers' built-in NanoChat "
            "computes rotary cos/sin in float32, so its logits will differ slightly (bfloat16 rounding of the "
            "rotary tables). The weights are exported unchanged.",
            stacklevel=2,
        )
    return NativeConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.n_embd,
        intermediate_size=4 * config.n_embd,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        num_key_value_heads=config.n_kv_head,
        max_position_embeddings=config.sequence_len,
        hidden_act="relu2",
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        final_logit_softcapping=config.softcap,
        attention_bias=False,
        tie_word_embeddings=False,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        **{ROTARY_DTYPE_KEY: config.rotary_dtype},
    )


def config_from_native(native_config) -> NanoChatHFConfig:
    """Our config for a `transformers.NanoChatConfig`; raises `ValueError` for shapes we cannot represent."""
    if native_config.hidden_act != "relu2":
        raise ValueError(f"hidden_act is {native_config.hidden_act!r}; nanochat uses 'relu2'")
    if native_config.intermediate_size != 4 * native_config.hidden_size:
        raise ValueError(
            f"intermediate_size is {native_config.intermediate_size}; nanochat uses 4 x hidden_size "
            f"= {4 * native_config.hidden_size}"
        )
    if getattr(native_config, "attention_bias", False):
        raise ValueError("attention_bias is true; nanochat has no biases")
    if native_config.final_logit_softcapping is None:
        raise ValueError("final_logit_softcapping is null; nanochat soft-caps its logits")
    rope = native_config.rope_parameters or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"rope_type is {rope.get('rope_type')!r}; nanochat uses plain rotary ('default')")
    head_dim = (
        getattr(native_config, "head_dim", None) or native_config.hidden_size // native_config.num_attention_heads
    )
    return NanoChatHFConfig(
        vocab_size=native_config.vocab_size,
        sequence_len=native_config.max_position_embeddings,
        n_layer=native_config.num_hidden_layers,
        n_embd=native_config.hidden_size,
        n_head=native_config.num_attention_heads,
        n_kv_head=native_config.num_key_value_heads,
        head_dim=head_dim,
        softcap=native_config.final_logit_softcapping,
        rope_theta=rope.get("rope_theta", 10000.0),
        rotary_dtype=getattr(native_config, ROTARY_DTYPE_KEY, "float32"),
        rms_norm_eps=native_config.rms_norm_eps,
        bos_token_id=native_config.bos_token_id,
        eos_token_id=native_config.eos_token_id,
        pad_token_id=native_config.pad_token_id,
    )
