"""Configuration of the nanochat GPT: generation 1 (the released d32, the default) and generation 2 (2026).

This file is copied next to every checkpoint this package saves, so it must stand alone: it imports
only the standard library, transformers and the tokenizer's file beside it (see the import below).

nanochat has one free knob, the depth. Everything else follows from it:

    width   = 64 * depth, rounded *up* to a multiple of the 128-wide head
    heads   = width / 128          (so every head is exactly 128 wide)
    kv_heads = heads               (GQA is supported, but no nanochat recipe uses it)

The rounding is nanochat's later (2026) rule. The original rule (heads = ceil(width / 128) without
rounding the width) gives the same shapes for every even depth, but cannot build odd depths such as
d21 (1344 is not divisible by 11 heads); with rounding d21 is 1408 wide with 11 heads.

Generation 2 (nanochat's 2026 models, `generation=2`) adds, each behind a flag of its own: value embeddings
on alternate layers, a sliding-window pattern, per-layer residual/x0 scalars, smear, backout, a 1.2 scale on
q and k, a vocabulary padded to a multiple of 64; rotary base 100,000 and its own initialisation. Flags left
unset take their generation's value, so `generation=2` alone is nanochat's 2026 architecture.
"""

import math

from transformers import PretrainedConfig

# Not used here. Saving a config copies this file *and its relative imports* next to it, so this import puts
# the tokenizer's code in every folder a model is saved to. Our tokenizer_config.json names that code in
# `auto_map` (for `trust_remote_code=True`). A tokenizer loaded without remote code is transformers' stock
# class: saving it keeps `auto_map` but copies no code, and a folder that names a missing file cannot be
# loaded with `trust_remote_code=True` (lm-eval, vLLM and our own model loading all pass it).
from .tokenization_nanochat_hf import NanoChatHFTokenizer  # noqa: F401


# float32 machine epsilon. nanochat calls `F.rms_norm` without an epsilon; PyTorch then computes in
# float32 with this epsilon whatever the input dtype is (not bfloat16's much larger epsilon).
NANOCHAT_RMS_NORM_EPS = 1.1920928955078125e-07

NANOCHAT_HEAD_DIM = 128
NANOCHAT_ASPECT_RATIO = 64

# Named sizes used by nanochat's scripts and README (depth only; width/heads follow from the rule).
PRESET_DEPTHS = {"d20": 20, "d21": 21, "d26": 26, "d32": 32}
# Generation 2's named sizes (d24 is the "time to GPT-2" speedrun model, d12 the scaling-law reference).
GEN2_PRESET_DEPTHS = {"d12": 12, "d20": 20, "d21": 21, "d24": 24, "d26": 26, "d32": 32}
GEN2_VOCAB_SIZE = 32768

# Each generation's value of every flag that is left as None.
GENERATION_DEFAULTS = {
    1: dict(
        value_embeddings=False,
        window_pattern="L",
        layer_lambdas=False,
        smear=False,
        backout=False,
        qk_scale=1.0,
        pad_vocab_size_to=1,
        rope_theta=10000.0,
        rotary_dtype="bfloat16",
    ),
    2: dict(
        value_embeddings=True,
        window_pattern="SSSL",
        layer_lambdas=True,
        smear=True,
        backout=True,
        qk_scale=1.2,
        pad_vocab_size_to=64,
        rope_theta=100000.0,
        # Tables computed in float32 and cast to the activation dtype (nanochat 2026's compute dtype).
        rotary_dtype="float32",
    ),
}
VE_GATE_CHANNELS = 12  # value-embedding gate: reads the first 12 channels of the attention input
SMEAR_GATE_CHANNELS = 24  # smear gate: reads the first 24 channels of the normed embedding
WINDOW_TILE = 128  # the short window is rounded up to a multiple of this


def has_value_embedding(layer: int, n_layer: int) -> bool:
    """Alternate layers counted back from the last, which always has one."""
    return layer % 2 == (n_layer - 1) % 2


def window_lefts(window_pattern: str, n_layer: int, sequence_len: int) -> list[int]:
    """Per layer, how many earlier keys a query sees: query i attends to keys j with 0 <= i - j <= left.

    `window_pattern` is tiled over the layers; `L` is `sequence_len`, `S` a quarter of it rounded up to a
    multiple of 128; the last layer is always `L`. (transformers' `sliding_window` counts keys including the
    query's own, so it is `left + 1`.)
    """
    short = -(-sequence_len // 4 // WINDOW_TILE) * WINDOW_TILE
    lefts = [sequence_len if window_pattern[i % len(window_pattern)] == "L" else short for i in range(n_layer)]
    lefts[-1] = sequence_len
    return lefts


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
        rope_theta (`float`, *optional*): rotary base; 10,000 (generation 1) or 100,000 (generation 2).
        rotary_dtype (`str`, *optional*): generation 1 keeps its cos/sin tables in bfloat16 (`"bfloat16"`, the
            generation-1 default); `"float32"` keeps them exact until they meet the activation dtype (as
            transformers' built-in NanoChat port does, and as generation 2 does).
        rms_norm_eps (`float`): epsilon of the weight-free RMSNorm; nanochat's effective value by default.
        use_cache (`bool`, defaults to `True`): return a KV cache from the forward pass.
        generation (`int`, defaults to 1): 1 or 2; the default of every flag below and the initialisation.
        value_embeddings (`bool`, *optional*): a `(padded_vocab, n_kv_head * head_dim)` embedding on alternate
            layers (the last always included), added to v as `3 * sigmoid(ve_gate(x[..., :12])) * ve`.
        window_pattern (`str`, *optional*): letters S/L tiled over layers, the last layer always L; an S layer
            sees `ceil(sequence_len / 4 / 128) * 128` earlier keys plus its own ("L" everywhere: full causal).
        layer_lambdas (`bool`, *optional*): `x = resid_lambdas[i] * x + x0_lambdas[i] * x0` before block i.
        smear (`bool`, *optional*): mix the previous token's normed embedding into each position through a
            gate on the first 24 channels, scaled by `smear_lambda`.
        backout (`bool`, *optional*): subtract `backout_lambda` x the residual after block `n_layer // 2`
            before the final norm.
        qk_scale (`float`, *optional*): q and k are multiplied by it after QK-norm (1.0 or 1.2).
        pad_vocab_size_to (`int`, *optional*): table rows are `vocab_size` rounded up to a multiple of it
            (1 or 64); logits are sliced back to `vocab_size` before the soft-cap.
        rope_parameters (`dict`, *optional*): transformers' RoPE parameters, for context extension, e.g.
            `{"rope_type": "yarn", "factor": 4.0}` ("linear", "dynamic", "yarn", ... as transformers'
            `ROPE_INIT_FUNCTIONS` provide). Unset: `{"rope_type": "default", "rope_theta": rope_theta}`,
            nanochat's rotary. A `rope_theta` given here wins over the argument.

    Tensor parallelism (`from_pretrained(..., tp_plan="auto")`): `base_model_tp_plan` shards the attention
    heads (c_q/c_k/c_v column-wise, c_proj row-wise) and the MLP (c_fc column-wise, c_proj row-wise); the LM
    head is split over the vocabulary and gathered. A config with value embeddings (generation 2) has no plan:
    the per-head gates and embeddings are not sharded with the heads.
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
    # Keys are relative to the trunk (`transformer.`); see the class docstring.
    base_model_tp_plan = {
        "h.*.attn.c_q": "colwise",
        "h.*.attn.c_k": "colwise",
        "h.*.attn.c_v": "colwise",
        "h.*.attn.c_proj": "rowwise",
        "h.*.mlp.c_fc": "colwise",
        "h.*.mlp.c_proj": "rowwise",
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
        rope_theta: float | None = None,
        rotary_dtype: str | None = None,
        rms_norm_eps: float = NANOCHAT_RMS_NORM_EPS,
        generation: int = 1,
        value_embeddings: bool | None = None,
        window_pattern: str | None = None,
        layer_lambdas: bool | None = None,
        smear: bool | None = None,
        backout: bool | None = None,
        qk_scale: float | None = None,
        pad_vocab_size_to: int | None = None,
        rope_parameters: dict | None = None,
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
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        if generation not in GENERATION_DEFAULTS:
            raise ValueError(f"NanoChatHFConfig: `generation` must be 1 or 2, got {generation!r}")
        self.generation = generation
        given = dict(
            value_embeddings=value_embeddings,
            window_pattern=window_pattern,
            layer_lambdas=layer_lambdas,
            smear=smear,
            backout=backout,
            qk_scale=qk_scale,
            pad_vocab_size_to=pad_vocab_size_to,
            rope_theta=rope_theta,
            rotary_dtype=rotary_dtype,
        )
        for name, value in given.items():
            setattr(self, name, GENERATION_DEFAULTS[generation][name] if value is None else value)
        self._validate_shape()
        self._validate_generation2()
        if rope_parameters is not None and not isinstance(rope_parameters, dict):
            raise ValueError(
                f"NanoChatHFConfig: `rope_parameters` must be a dict such as {{'rope_type': 'linear', 'factor': 2.0}}, "
                f"got {rope_parameters!r}"
            )
        # transformers' PretrainedConfig fills in `rope_type` ("default") and `rope_theta` (ours) and validates.
        self.rope_parameters = dict(rope_parameters) if rope_parameters else None
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self.rope_theta = self.rope_parameters["rope_theta"]
        if self.value_embeddings:
            self.base_model_tp_plan = None

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

    def _validate_generation2(self):
        pattern = self.window_pattern
        if not isinstance(pattern, str) or not pattern or set(pattern) - {"S", "L"}:
            raise ValueError(
                f"NanoChatHFConfig: `window_pattern` must be a non-empty string of the letters S (short window) "
                f"and L (long window), e.g. 'SSSL'; got {pattern!r}"
            )
        size = self.pad_vocab_size_to
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError(f"NanoChatHFConfig: `pad_vocab_size_to` must be a positive integer, got {size!r}")
        if not isinstance(self.qk_scale, (int, float)) or self.qk_scale <= 0:
            raise ValueError(f"NanoChatHFConfig: `qk_scale` must be a positive number, got {self.qk_scale!r}")
        if self.value_embeddings and self.n_embd < VE_GATE_CHANNELS:
            raise ValueError(f"NanoChatHFConfig: value embeddings need `n_embd` >= {VE_GATE_CHANNELS}")
        if self.smear and self.n_embd < SMEAR_GATE_CHANNELS:
            raise ValueError(f"NanoChatHFConfig: smear needs `n_embd` >= {SMEAR_GATE_CHANNELS}")

    @property
    def padded_vocab_size(self) -> int:
        """Rows of `wte`, `lm_head` and the value embeddings; logits are sliced back to `vocab_size`."""
        return -(-self.vocab_size // self.pad_vocab_size_to) * self.pad_vocab_size_to

    @property
    def window_lefts(self) -> list[int]:
        """Per layer, the `left` of nanochat's `(left, 0)` window (see `window_lefts`)."""
        return window_lefts(self.window_pattern, self.n_layer, self.sequence_len)

    @property
    def value_embedding_layers(self) -> list[int]:
        if not self.value_embeddings:
            return []
        return [i for i in range(self.n_layer) if has_value_embedding(i, self.n_layer)]

    @property
    def backout_layer(self) -> int:
        """The block whose output residual is subtracted (x backout_lambda) before the final norm."""
        return self.n_layer // 2

    @property
    def uses_generation2_features(self) -> bool:
        """Whether any generation-2 feature is on (then transformers' built-in NanoChat cannot represent it)."""
        return bool(
            self.value_embeddings
            or self.layer_lambdas
            or self.smear
            or self.backout
            or self.qk_scale != 1.0
            or self.padded_vocab_size != self.vocab_size
            or "S" in self.window_pattern
        )

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
    def from_preset(cls, name: str, generation: int = 1, **kwargs) -> "NanoChatHFConfig":
        """One of nanochat's named sizes: `d20`, `d21`, `d26`, `d32` (generation 2 adds `d12`, `d24`), or any
        `d<N>`. `generation=2` gives the 2026 architecture with its 32,768-token vocabulary."""
        key = str(name).lower()
        presets = GEN2_PRESET_DEPTHS if generation == 2 else PRESET_DEPTHS
        if generation == 2:
            kwargs.setdefault("vocab_size", GEN2_VOCAB_SIZE)
        if key in presets:
            return cls.from_depth(presets[key], generation=generation, **kwargs)
        if key.startswith("d") and key[1:].isdigit() and int(key[1:]) > 0:
            return cls.from_depth(int(key[1:]), generation=generation, **kwargs)
        raise ValueError(f"NanoChatHFConfig: unknown preset {name!r}; expected one of {sorted(presets)} or d<N>")


# The name this class had before it was renamed away from transformers' built-in `NanoChatConfig`.
NanoChatConfig = NanoChatHFConfig


__all__ = ["NanoChatHFConfig", "NANOCHAT_RMS_NORM_EPS", "PRESET_DEPTHS", "GEN2_PRESET_DEPTHS"]
