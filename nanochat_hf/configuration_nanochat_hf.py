"""Configuration of the nanochat GPT (generation 1, the architecture of the released d32).

This file is copied next to every checkpoint this package saves, so it must stand alone: it imports
only the standard library and transformers.

nanochat has one free knob, the depth. Everything else follows from it:

    width   = 64 * depth, rounded *up* to a multiple of the 128-wide head
    heads   = width / 128          (so every head is exactly 128 wide)
    kv_heads = heads               (GQA is supported, but no nanochat recipe uses it)

The rounding is nanochat's later (2026) rule. The original rule (heads = ceil(width / 128) without
rounding the width) gives the same shapes for every even depth, but cannot build odd depths such as
d21 (1344 is not divisible by 11 heads); with rounding d21 is 1408 wide with 11 heads.
"""

import math

from transformers import PretrainedConfig


# float32 machine epsilon. nanochat calls `F.rms_norm` without an epsilon; PyTorch then computes in
# float32 with this epsilon whatever the input dtype is (not bfloat16's much larger epsilon).
NANOCHAT_RMS_NORM_EPS = 1.1920928955078125e-07

NANOCHAT_HEAD_DIM = 128
NANOCHAT_ASPECT_RATIO = 64

# Named sizes used by nanochat's scripts and README (depth only; width/heads follow from the rule).
PRESET_DEPTHS = {"d20": 20, "d21": 21, "d26": 26, "d32": 32}


class NanoChatHFConfig(PretrainedConfig):
    r"""
    Configuration for [`NanoChatHFModel`] and [`NanoChatHFForCausalLM`].

    Field names follow nanochat's own `GPTConfig` (so a nanochat `meta_*.json` maps one to one);
    `attribute_map` exposes the usual Hugging Face names (`hidden_size`, `num_hidden_layers`, ...).

    Args:
        vocab_size (`int`, defaults to 65536): tokenizer vocabulary, 9 special tokens included.
        sequence_len (`int`, defaults to 2048): training context length.
        n_layer (`int`, defaults to 20): number of transformer blocks (nanochat's "depth").
        n_embd (`int`, defaults to 1280): model width.
        n_head (`int`, defaults to 10): query heads.
        n_kv_head (`int`, *optional*): key/value heads; defaults to `n_head`.
        head_dim (`int`, *optional*): defaults to `n_embd // n_head`.
        softcap (`float`, defaults to 15.0): logits become `softcap * tanh(logits / softcap)`, in float32.
        rope_theta (`float`, defaults to 10000.0): rotary base.
        rotary_dtype (`str`, defaults to `"bfloat16"`): nanochat keeps its cos/sin tables in bfloat16;
            `"float32"` keeps them exact (as transformers' built-in NanoChat port does).
        rms_norm_eps (`float`): epsilon of the weight-free RMSNorm; nanochat's effective value by default.
        use_cache (`bool`, defaults to `True`): return a KV cache from the forward pass.
    """

    model_type = "nanochat_hf"
    keys_to_ignore_at_inference = ["cache"]
    attribute_map = {
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "num_key_value_heads": "n_kv_head",
        "max_position_embeddings": "sequence_len",
        # Generic code (trl's fused LM-head loss, transformers' built-in NanoChat) reads the soft-cap here.
        "final_logit_softcapping": "softcap",
    }

    def __init__(
        self,
        vocab_size: int = 65536,
        sequence_len: int = 2048,
        n_layer: int = 20,
        n_embd: int = 1280,
        n_head: int = 10,
        n_kv_head: int | None = None,
        head_dim: int | None = None,
        softcap: float = 15.0,
        rope_theta: float = 10000.0,
        rotary_dtype: str = "bfloat16",
        rms_norm_eps: float = NANOCHAT_RMS_NORM_EPS,
        use_cache: bool = True,
        bos_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        tie_word_embeddings: bool = False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.sequence_len = sequence_len
        self.n_layer = n_layer
        self.n_embd = n_embd
        self.n_head = n_head
        self.n_kv_head = n_head if n_kv_head is None else n_kv_head
        self.head_dim = head_dim if head_dim is not None else (n_embd // n_head if n_head else None)
        self.softcap = softcap
        self.rope_theta = rope_theta
        self.rotary_dtype = rotary_dtype
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self._validate_shape()
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    def _validate_shape(self):
        for name in ("vocab_size", "sequence_len", "n_layer", "n_embd", "n_head", "n_kv_head", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"NanoChatHFConfig: `{name}` must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"NanoChatHFConfig: `n_embd` ({self.n_embd}) must be divisible by `n_head` ({self.n_head})"
            )
        if self.head_dim * self.n_head != self.n_embd:
            raise ValueError(
                f"NanoChatHFConfig: `head_dim` ({self.head_dim}) x `n_head` ({self.n_head}) must equal "
                f"`n_embd` ({self.n_embd})"
            )
        if self.head_dim % 2 != 0:
            raise ValueError(f"NanoChatHFConfig: `head_dim` ({self.head_dim}) must be even for rotary embeddings")
        if self.n_head % self.n_kv_head != 0:
            raise ValueError(f"NanoChatHFConfig: `n_kv_head` ({self.n_kv_head}) must divide `n_head` ({self.n_head})")
        if self.rotary_dtype not in ("bfloat16", "float32"):
            raise ValueError(
                f"NanoChatHFConfig: `rotary_dtype` must be 'bfloat16' or 'float32', got {self.rotary_dtype!r}"
            )
        if not self.softcap or self.softcap <= 0:
            raise ValueError(f"NanoChatHFConfig: `softcap` must be a positive number, got {self.softcap!r}")

    @classmethod
    def from_depth(
        cls,
        depth: int,
        aspect_ratio: int = NANOCHAT_ASPECT_RATIO,
        head_dim: int = NANOCHAT_HEAD_DIM,
        **kwargs,
    ) -> "NanoChatHFConfig":
        """nanochat's sizing rule: width = aspect_ratio * depth rounded up to a multiple of `head_dim`."""
        if not isinstance(depth, int) or isinstance(depth, bool) or depth <= 0:
            raise ValueError(f"NanoChatHFConfig.from_depth: `depth` must be a positive integer, got {depth!r}")
        n_embd = math.ceil(depth * aspect_ratio / head_dim) * head_dim
        n_head = n_embd // head_dim
        kwargs.setdefault("n_kv_head", n_head)
        return cls(n_layer=depth, n_embd=n_embd, n_head=n_head, head_dim=head_dim, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "NanoChatHFConfig":
        """One of nanochat's named sizes: `d20`, `d21`, `d26`, `d32` (or any `d<N>`)."""
        key = str(name).lower()
        if key in PRESET_DEPTHS:
            return cls.from_depth(PRESET_DEPTHS[key], **kwargs)
        if key.startswith("d") and key[1:].isdigit():
            return cls.from_depth(int(key[1:]), **kwargs)
        raise ValueError(f"NanoChatHFConfig: unknown preset {name!r}; expected one of {sorted(PRESET_DEPTHS)} or d<N>")


# The name this class had before it was renamed away from transformers' built-in `NanoChatConfig`.
NanoChatConfig = NanoChatHFConfig


__all__ = ["NanoChatHFConfig", "NANOCHAT_RMS_NORM_EPS", "PRESET_DEPTHS"]
