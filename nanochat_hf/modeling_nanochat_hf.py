"""The nanochat GPT as a Hugging Face model: generation 1 (the released d32) and generation 2 (2026).

This file is copied next to every checkpoint this package saves and runs on machines where the
`nanochat_hf` package is not installed, so it imports only torch and transformers.

The architecture, in nanochat's words and order:

    x = norm(wte(idx))                      # norm right after the embedding
    for each block:
        x = x + attn(norm(x))               # rotary, then QK-norm, then causal attention
        x = x + mlp(norm(x))                # relu(x)^2, hidden width 4d
    logits = lm_head(norm(x))               # untied head
    logits = 15 * tanh(logits.float() / 15) # soft-cap, in float32

`norm` is RMSNorm without a learnable weight. No biases, no positional embedding, no dropout.
Parameter names are nanochat's own (`transformer.wte`, `transformer.h.{i}.attn.c_q`, ...), so a nanochat
state dict loads with no renaming.

Generation 2 (each step behind a config flag; all on with `generation=2`):

    e = norm(wte(idx))
    x = e; x[t] += smear_lambda * sigmoid(smear_gate(e[t, :24])) * e[t-1]   for t >= 1 (smear)
    x0 = x
    for block i:
        x = resid_lambdas[i] * x + x0_lambdas[i] * x0
        in attention: v += 3 * sigmoid(ve_gate(h[..., :12])) * value_embeds[i](idx)   (alternate layers)
                      q, k *= 1.2 after QK-norm; S layers see a sliding window of earlier keys
        if i == n_layer // 2: x_mid = x
    x = x - backout_lambda * x_mid                                   (backout)
    logits = lm_head(norm(x))[..., :vocab_size]                      (tables padded to a multiple of 64)

The generation-2 scalars and tables live in the trunk (`transformer.resid_lambdas`, `transformer.value_embeds.{i}`,
...); nanochat keeps them at the top level, the converter moves them.
"""

import copy
import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, sliding_window_overlay
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_nanochat_hf import SMEAR_GATE_CHANNELS, VE_GATE_CHANNELS, NanoChatHFConfig


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    # Weight-free RMSNorm. PyTorch's kernel computes in float32 and casts back to x's dtype, as nanochat.
    return F.rms_norm(x, (x.size(-1),), eps=eps)


def zero_initialised(linear: nn.Linear) -> nn.Linear:
    """Mark a Linear whose from-scratch value is zero (see `_init_weights`)."""
    linear.zero_init = True
    return linear


def gen2_initialised(module: nn.Module, kind: str) -> nn.Module:
    """Mark a module with its generation-2 initialisation (see `_init_weights`)."""
    module.gen2_init = kind
    return module


# Positions the stored rotary tables cover, as a multiple of `sequence_len` (nanochat precomputes 10x).
ROTARY_TABLE_FACTOR = 10


class NanoChatHFRotaryEmbedding(nn.Module):
    """cos/sin of the rotary angles for given positions.

    With `rotary_dtype="bfloat16"` (generation 1's default) nanochat rounds its precomputed tables to
    bfloat16, and so does this module: it stores the rounded tables (non-persistent buffers, covering
    `ROTARY_TABLE_FACTOR * sequence_len` positions; later positions are computed) and gathers rows by
    `position_ids`. Computing the angles
    on the fly and rounding them would not survive `torch.compile`, whose code generation drops a
    float32 -> bfloat16 -> float32 round trip; a stored table is data, so compiled and eager numerics agree.

    With `rotary_dtype="float32"` (generation 2) and for dynamic RoPE scaling (whose frequencies depend on
    the sequence length) the angles are computed in float32 from `position_ids` on every call.

    `config.rope_parameters["rope_type"]` selects the frequencies: "default" (nanochat's), or "linear",
    "dynamic", "yarn", ... through transformers' `ROPE_INIT_FUNCTIONS` (their attention factor scales cos/sin).
    """

    def __init__(self, config: NanoChatHFConfig):
        super().__init__()
        self.config = config
        self.head_dim = config.head_dim
        # `rope_parameters` holds the base (the config keeps `rope_theta` equal to it).
        self.base = (config.rope_parameters or {}).get("rope_theta", config.rope_theta)
        # nanochat rounds its tables to bfloat16; the rotation itself then runs in the activation dtype.
        self.table_dtype = getattr(torch, config.rotary_dtype)
        self.rope_type = (config.rope_parameters or {}).get("rope_type", "default")
        self.max_seq_len_cached = self.original_max_seq_len = config.sequence_len
        inv_freq, self.attention_scaling = self.compute_inv_freq()
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)
        self.uses_table = self.table_dtype != torch.float32 and "dynamic" not in self.rope_type
        self.table_len = ROTARY_TABLE_FACTOR * config.sequence_len if self.uses_table else 0
        cos, sin = self.compute_tables()
        self.cos_table = nn.Buffer(cos, persistent=False)
        self.sin_table = nn.Buffer(sin, persistent=False)

    def compute_inv_freq(self, device=None) -> tuple[torch.Tensor, float]:
        if self.rope_type == "default":
            channels = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
            return 1.0 / (self.base ** (channels / self.head_dim)), 1.0
        return ROPE_INIT_FUNCTIONS[self.rope_type](self.config, device)

    def compute_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rounded (table_len, head_dim/2) cos/sin tables (empty when angles are computed on the fly)."""
        positions = torch.arange(self.table_len, dtype=torch.float32, device=self.inv_freq.device)
        angles = positions[:, None] * self.inv_freq.float()[None]
        cos = (angles.cos() * self.attention_scaling).to(self.table_dtype)
        sin = (angles.sin() * self.attention_scaling).to(self.table_dtype)
        return cos, sin

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """Recompute the non-persistent buffers (after `from_pretrained` built the model on the meta device)."""
        inv_freq, self.attention_scaling = self.compute_inv_freq(device=self.inv_freq.device)
        init.copy_(self.inv_freq, inv_freq)
        init.copy_(self.original_inv_freq, inv_freq)
        cos, sin = self.compute_tables()
        init.copy_(self.cos_table, cos)
        init.copy_(self.sin_table, sin)

    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq.to(device=x.device, dtype=torch.float32)
        angles = position_ids.to(torch.float32)[..., None] * inv_freq  # (B, T, head_dim/2)
        cos = (angles.cos() * self.attention_scaling).to(self.table_dtype).to(x.dtype)
        sin = (angles.sin() * self.attention_scaling).to(self.table_dtype).to(x.dtype)
        if self.uses_table:
            # Rows of the stored table; positions past it (ROTARY_TABLE_FACTOR x sequence_len) keep the values
            # computed above (the same in eager; under torch.compile without the bfloat16 rounding).
            inside = (position_ids < self.table_len)[..., None]
            rows = position_ids.clamp(max=self.table_len - 1)
            cos = torch.where(inside, self.cos_table[rows].to(x.dtype), cos)
            sin = torch.where(inside, self.sin_table[rows].to(x.dtype), sin)
        return cos, sin


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """nanochat's rotation on x of shape (B, H, T, head_dim); cos/sin are (B, T, head_dim/2).

    Dimension j pairs with j + head_dim/2. nanochat rotates by -theta (y1 = x1 cos + x2 sin), the
    transpose of Llama's `rotate_half`; attention scores depend on the sign, so checkpoints only work
    with nanochat's convention.
    """
    cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    y1 = x1 * cos + x2 * sin
    y2 = x1 * (-sin) + x2 * cos
    return torch.cat([y1, y2], dim=-1)


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, kv_heads, T, D) -> (B, kv_heads * n_rep, T, D) for grouped-query attention."""
    if n_rep == 1:
        return hidden_states
    batch, kv_heads, seq_len, head_dim = hidden_states.shape
    hidden_states = hidden_states[:, :, None].expand(batch, kv_heads, n_rep, seq_len, head_dim)
    return hidden_states.reshape(batch, kv_heads * n_rep, seq_len, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class NanoChatHFAttention(nn.Module):
    def __init__(self, config: NanoChatHFConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.num_key_value_groups = config.n_head // config.n_kv_head
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.eps = config.rms_norm_eps
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = zero_initialised(nn.Linear(config.n_embd, config.n_embd, bias=False))
        self.qk_scale = config.qk_scale
        # nanochat's window (left, 0): query i sees keys j with 0 <= i - j <= left, i.e. left + 1 keys;
        # transformers' `sliding_window` counts those keys, so it is left + 1. Long layers are plain causal.
        left = config.window_lefts[layer_idx]
        self.window_left = left if left < config.sequence_len else None
        self.sliding_window = None if self.window_left is None else self.window_left + 1
        self.ve_gate = None
        if layer_idx in config.value_embedding_layers:
            gate = nn.Linear(VE_GATE_CHANNELS, self.n_kv_head, bias=False)
            self.ve_gate = gen2_initialised(gate, "gate")
        if config.generation == 2:
            for linear in (self.c_q, self.c_k, self.c_v):
                gen2_initialised(linear, "uniform")

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        value_embedding: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq_len, _ = hidden_states.shape
        # Heads as -1: under tensor parallelism each rank holds a slice of them.
        q = self.c_q(hidden_states).view(batch, seq_len, -1, self.head_dim).transpose(1, 2)
        k = self.c_k(hidden_states).view(batch, seq_len, -1, self.head_dim).transpose(1, 2)
        v = self.c_v(hidden_states).view(batch, seq_len, -1, self.head_dim)
        if self.ve_gate is not None:
            # Value residual: one gate in (0, 3) per kv head, from the first 12 channels of the block input.
            gate = 3 * torch.sigmoid(self.ve_gate(hidden_states[..., :VE_GATE_CHANNELS]))
            v = v + gate.unsqueeze(-1) * value_embedding.view(batch, seq_len, -1, self.head_dim)
        v = v.transpose(1, 2)

        # Rotary first, then QK-norm (nanochat's order; the norm sees the rotated vectors).
        cos, sin = position_embeddings
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k = rms_norm(q, self.eps), rms_norm(k, self.eps)
        if self.qk_scale != 1.0:
            q, k = q * self.qk_scale, k * self.qk_scale

        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        if kwargs.get("output_attentions"):
            # Only the eager path materialises the weights (sdpa/flash/flex return None for them), so a call that
            # asks for them runs eager; the trunk then builds eager masks (`_attention_masks`).
            attention_interface = eager_attention_forward
        if self.sliding_window is not None:
            # Read by the flash-attention paths; sdpa, eager and flex get the window through the mask.
            kwargs["sliding_window"] = self.sliding_window
        output, weights = attention_interface(
            self, q, k, v, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs
        )
        output = output.reshape(batch, seq_len, -1).contiguous()
        return self.c_proj(output), weights


class NanoChatHFMLP(nn.Module):
    def __init__(self, config: NanoChatHFConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = zero_initialised(nn.Linear(4 * config.n_embd, config.n_embd, bias=False))
        if config.generation == 2:
            gen2_initialised(self.c_fc, "uniform_fc")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())


class NanoChatHFBlock(GradientCheckpointingLayer):
    def __init__(self, config: NanoChatHFConfig, layer_idx: int):
        super().__init__()
        self.eps = config.rms_norm_eps
        self.attn = NanoChatHFAttention(config, layer_idx)
        self.mlp = NanoChatHFMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        value_embedding: torch.Tensor | None = None,
        x0: torch.Tensor | None = None,
        resid_lambda: torch.Tensor | None = None,
        x0_lambda: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        # Tensors that need gradients are positional so that gradient checkpointing passes them through.
        if resid_lambda is not None:
            # Generation 2's layer scalars, applied here so that the block's input (recorded as a hidden state
            # by transformers' output capturing) is the previous block's output, not the mixture.
            hidden_states = resid_lambda * hidden_states + x0_lambda * x0
        attn_out, _ = self.attn(
            rms_norm(hidden_states, self.eps),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            cache=cache,
            value_embedding=value_embedding,
            **kwargs,
        )
        hidden_states = hidden_states + attn_out
        hidden_states = hidden_states + self.mlp(rms_norm(hidden_states, self.eps))
        return hidden_states


class NanoChatHFPreTrainedModel(PreTrainedModel):
    config_class = NanoChatHFConfig
    config: NanoChatHFConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["NanoChatHFBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # What transformers' output capturing records: each block's output as a hidden state (the first block's
    # input too), each attention's weights (eager attention; see `NanoChatHFAttention`).
    _can_record_outputs = {"hidden_states": NanoChatHFBlock, "attentions": NanoChatHFAttention}

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers adds only the saved class to `auto_map`; name the trunk and the LM head both, so
        # `AutoModel` and `AutoModelForCausalLM` each load the folder with `trust_remote_code=True`.
        if self._auto_class is not None:
            module = "modeling_nanochat_hf"
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            # Assigned, not defaulted: a folder saved by an older version names the old classes here.
            auto_map["AutoModel"] = f"{module}.NanoChatHFModel"
            auto_map["AutoModelForCausalLM"] = f"{module}.NanoChatHFForCausalLM"
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """nanochat's from-scratch initialisation (generation 1).

        Every Linear: Normal(0, s) with s = 1/sqrt(fan_in) * min(1, sqrt(fan_out / fan_in)) (arXiv 2310.17813);
        the embedding: Normal(0, 1); both output projections (`c_proj`) and the `lm_head`: zeros, so every
        block starts as the identity and the first loss is exactly ln(vocab_size).

        transformers calls this on leaf modules only for custom code (a container without parameters of its
        own counts as initialised), so the zero-initialised Linears carry a `zero_init` flag set where they are
        built. `init.*` skips tensors that `from_pretrained` already loaded.

        Generation 2 (with s = sqrt(3 / n_embd), the uniform bound of standard deviation 1/sqrt(n_embd)):
        c_q, c_k, c_v and the value embeddings U(-s, s); mlp.c_fc U(-0.4 s, 0.4 s); both c_proj zeros; the
        gates (ve_gate, smear_gate) U(0, 0.02); wte N(0, 0.8); lm_head N(0, 0.001); resid_lambdas from 1.15
        down to 1.05 and x0_lambdas from 0.20 down to 0.05 linearly over the layers; smear_lambda 0;
        backout_lambda 0.2.
        """
        if isinstance(module, NanoChatHFRotaryEmbedding):
            module.reset_buffers()
            return
        if self.config.generation == 2:
            self._init_generation2(module)
            return
        if isinstance(module, nn.Linear):
            if getattr(module, "zero_init", False):
                init.zeros_(module.weight)
            else:
                fan_out, fan_in = module.weight.shape
                std = 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
                init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0)

    def _init_generation2(self, module: nn.Module) -> None:
        bound = math.sqrt(3.0 / self.config.n_embd)
        kind = getattr(module, "gen2_init", None)
        if isinstance(module, NanoChatHFModel):
            n_layer = self.config.n_layer
            if module.resid_lambdas is not None:
                resid = [1.15 - (0.10 * i / max(n_layer - 1, 1)) for i in range(n_layer)]
                x0 = [0.20 - (0.15 * i / max(n_layer - 1, 1)) for i in range(n_layer)]
                init.copy_(module.resid_lambdas, torch.tensor(resid, dtype=torch.float32))
                init.copy_(module.x0_lambdas, torch.tensor(x0, dtype=torch.float32))
            if module.smear_lambda is not None:
                init.zeros_(module.smear_lambda)
            if module.backout_lambda is not None:
                init.constant_(module.backout_lambda, 0.2)
        elif kind == "uniform":
            init.uniform_(module.weight, -bound, bound)
        elif kind == "uniform_fc":
            init.uniform_(module.weight, -0.4 * bound, 0.4 * bound)
        elif kind == "gate":
            init.uniform_(module.weight, 0.0, 0.02)
        elif kind == "lm_head":
            init.normal_(module.weight, mean=0.0, std=0.001)
        elif kind == "wte":
            init.normal_(module.weight, mean=0.0, std=0.8)
        elif isinstance(module, nn.Linear) and getattr(module, "zero_init", False):
            init.zeros_(module.weight)


class NanoChatHFModel(NanoChatHFPreTrainedModel):
    """The trunk: embedding, blocks and final norm; returns the normalised last hidden state.

    With smear on and a cache, each position's pre-smear normed embedding is kept in one extra cache layer
    (index `n_layer`, its keys; empty values), so the first token of a later call (a decoding step or a
    chunk of prefill) is smeared with the right previous embedding, and beam search, cropping (assisted
    decoding) and batch selection keep it in step with the KV cache.
    """

    def __init__(self, config: NanoChatHFConfig):
        super().__init__(config)
        vocab = config.padded_vocab_size
        self.wte = nn.Embedding(vocab, config.n_embd)
        self.h = nn.ModuleList([NanoChatHFBlock(config, i) for i in range(config.n_layer)])
        self.rotary_emb = NanoChatHFRotaryEmbedding(config)
        self.resid_lambdas = self.x0_lambdas = self.smear_gate = self.smear_lambda = self.backout_lambda = None
        if config.layer_lambdas:
            self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
            self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))
        if config.smear:
            self.smear_gate = gen2_initialised(nn.Linear(SMEAR_GATE_CHANNELS, 1, bias=False), "gate")
            self.smear_lambda = nn.Parameter(torch.zeros(1))
        if config.backout:
            self.backout_lambda = nn.Parameter(torch.full((1,), 0.2))
        kv_dim = config.n_kv_head * config.head_dim
        self.value_embeds = nn.ModuleDict(
            {str(i): gen2_initialised(nn.Embedding(vocab, kv_dim), "uniform") for i in config.value_embedding_layers}
        )
        if config.generation == 2:
            gen2_initialised(self.wte, "wte")
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def _attention_masks(self, inputs_embeds, attention_mask, cache, position_ids, output_attentions=False) -> dict:
        """One mask per distinct window (None = plain causal), built by transformers for the attention backend.

        With `output_attentions` the attention runs eager (the one path that returns its weights), so the
        masks are built for eager too.
        """
        config = self.config
        if output_attentions and config._attn_implementation != "eager":
            config = copy.copy(config)
            config._attn_implementation = "eager"
        masks = {}
        for window_left in {block.attn.window_left for block in self.h}:
            overlay = None if window_left is None else sliding_window_overlay(window_left + 1)
            masks[window_left] = create_causal_mask(
                config=config,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                cache=cache,
                position_ids=position_ids,
                and_mask_function=overlay,
            )
        return masks

    def _smear(self, embedded: torch.Tensor, attention_mask, cache: Cache | None, past_seen: int) -> torch.Tensor:
        """x[t] += smear_lambda * sigmoid(smear_gate(x[t, :24])) * x[t-1], x[t-1] the previous pre-smear embedding.

        Position 0 of a sequence is not smeared; nor is a token whose previous position is padding (the
        first real token of a left-padded row), as in that row alone.
        """
        previous = embedded[:, :-1]
        if cache is not None:
            layer = self.config.n_layer
            if len(cache.layers) <= layer:
                cache.layers.append(DynamicLayer())
            stored, _ = cache.update(embedded[:, None], embedded[:, None, :, :0], layer)
            previous = stored[:, 0, -embedded.shape[1] - 1 : -1]
        starts_fresh = previous.shape[1] < embedded.shape[1]  # no previous embedding for the first position
        gate = self.smear_lambda.to(embedded.dtype) * torch.sigmoid(
            self.smear_gate(embedded[..., :SMEAR_GATE_CHANNELS])
        )
        if starts_fresh:
            gate = gate[:, 1:]
        if attention_mask is not None and attention_mask.dim() == 2:
            # attention_mask covers the cached positions too: the previous position of new token t is past_seen + t - 1.
            first = past_seen if not starts_fresh else past_seen + 1
            previous_is_real = attention_mask[:, first - 1 : first - 1 + gate.shape[1]]
            gate = gate * previous_is_real[..., None].to(gate.dtype)
        smeared = embedded[:, embedded.shape[1] - gate.shape[1] :] + gate * previous
        if starts_fresh:
            return torch.cat([embedded[:, :1], smeared], dim=1)
        return smeared

    # `past_key_values` is the name before transformers 5.24; transformers warns for it and passes it as `cache`.
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        """`output_hidden_states` (True, or the indices to keep), `output_attentions` and `return_dict` are
        handled by transformers' `capture_outputs` (hooks on the blocks and attentions)."""
        kwargs.pop("cache_position", None)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("NanoChatHFModel: pass exactly one of `input_ids` or `inputs_embeds`")
        if self.value_embeds and input_ids is None:
            raise ValueError(
                "NanoChatHFModel: value embeddings look up token ids; pass `input_ids`, not `inputs_embeds`"
            )
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past_seen = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past_seen, past_seen + inputs_embeds.shape[1], device=inputs_embeds.device)
            position_ids = position_ids.unsqueeze(0).expand(inputs_embeds.shape[0], -1)

        masks = self._attention_masks(
            inputs_embeds, attention_mask, cache, position_ids, output_attentions=bool(kwargs.get("output_attentions"))
        )
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)

        hidden_states = rms_norm(inputs_embeds, self.config.rms_norm_eps)  # norm right after the embedding
        if self.smear_gate is not None:
            hidden_states = self._smear(hidden_states, attention_mask, cache, past_seen)
        x0 = hidden_states
        backout = None
        for i, block in enumerate(self.h):
            lambdas = (None, None)
            if self.resid_lambdas is not None:
                lambdas = (self.resid_lambdas[i], self.x0_lambdas[i])
            value_embedding = None
            if str(i) in self.value_embeds:
                value_embedding = self.value_embeds[str(i)](input_ids).to(hidden_states.dtype)
            hidden_states = block(
                hidden_states,
                value_embedding,
                x0 if self.resid_lambdas is not None else None,
                *lambdas,
                position_embeddings=position_embeddings,
                attention_mask=masks[block.attn.window_left],
                cache=cache,
                **kwargs,
            )
            if self.backout_lambda is not None and i == self.config.backout_layer:
                backout = hidden_states
        if backout is not None:
            hidden_states = hidden_states - self.backout_lambda.to(hidden_states.dtype) * backout
        hidden_states = rms_norm(hidden_states, self.config.rms_norm_eps)
        # capture_outputs replaces the last recorded hidden state with this one (after backout and the norm).
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache if use_cache else None)


def chunked_softcap_cross_entropy(
    hidden_states: torch.Tensor,
    lm_head: Callable[[torch.Tensor], torch.Tensor],
    softcap: float,
    chunk_size: int,
    labels: torch.Tensor | None = None,
    shift_labels: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    **kwargs,
) -> torch.Tensor:
    """The causal-LM loss of `softcap * tanh(lm_head(hidden_states).float() / softcap)`, `chunk_size` tokens at a time.

    Same value as transformers' `ForCausalLMLoss` on the whole soft-capped logits (labels shifted left and
    padded with `ignore_index`, or `shift_labels` used as given; the mean over counted targets, or the sum
    divided by `num_items_in_batch`), but the float32 `tokens x vocab` logits are never whole: each chunk's
    logits are made, reduced to a summed loss and dropped, and made again from the saved hidden states
    during backward (`torch.utils.checkpoint`). Memory is O(chunk_size x vocab) instead of
    O(tokens x vocab): for d32 at 2048 tokens, 64 MiB per 256-token chunk instead of ~1.5-2 GiB. The cost
    is one more `lm_head` matmul per token in backward. The soft-cap is applied inside the chunk, in float32.
    """
    if shift_labels is None:
        # Targets of position t are labels[t + 1]; the last position has none.
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
    targets = shift_labels.reshape(-1).to(hidden.device)

    def chunk_loss_sum(chunk_hidden: torch.Tensor, chunk_targets: torch.Tensor) -> torch.Tensor:
        logits = lm_head(chunk_hidden)
        logits = softcap * torch.tanh(logits.float() / softcap)
        return F.cross_entropy(logits, chunk_targets, ignore_index=ignore_index, reduction="sum")

    total = None
    for start in range(0, hidden.shape[0], chunk_size):
        chunk = checkpoint(
            chunk_loss_sum,
            hidden[start : start + chunk_size],
            targets[start : start + chunk_size],
            use_reentrant=False,
        )
        total = chunk if total is None else total + chunk
    if num_items_in_batch is None:
        return total / (targets != ignore_index).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


class NanoChatHFForCausalLM(NanoChatHFPreTrainedModel, GenerationMixin):
    """The trunk plus the untied `lm_head`, with nanochat's float32 logit soft-cap.

    `loss_chunk_size` (a runtime attribute, `None` by default): when set to a number of tokens and the model
    is in training mode with `labels` or `shift_labels`, the loss is computed by
    `chunked_softcap_cross_entropy` and the returned `logits` are **None** (they are never whole). It is an
    attribute rather than a config field on purpose: it changes memory, not the model, and a checkpoint
    saved during a chunked run must not make a later user's training forward drop its logits.
    """

    # Tensor parallelism: the vocabulary-sharded head gathers its logits; pipeline stage: hidden states in, logits out.
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: NanoChatHFConfig):
        super().__init__(config)
        self.transformer = NanoChatHFModel(config)
        self.lm_head = zero_initialised(nn.Linear(config.n_embd, config.padded_vocab_size, bias=False))
        if config.generation == 2:
            gen2_initialised(self.lm_head, "lm_head")
        self.loss_chunk_size: int | None = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def softcap_logits(self, logits: torch.Tensor) -> torch.Tensor:
        cap = self.config.softcap
        return cap * torch.tanh(logits.float() / cap)

    def vocab_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`lm_head` without the padding rows' columns (the raw logits of the real vocabulary)."""
        logits = self.lm_head(hidden_states)
        if logits.shape[-1] != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]
        return logits

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        """generate()'s position ids, or None when its attention mask is all ones (no row is padded).

        Without them the model numbers the new tokens from the cache's length, the same numbers, and
        `generate()` then neither extends nor slices a position tensor at every step.
        """
        mask = model_kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2 and bool(mask.all()):
            return None
        return super()._prepare_position_ids_for_generation(inputs_tensor, model_kwargs)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch, seq_len)`, *optional*):
            Targets in Hugging Face's convention: the same positions as `input_ids` (the model shifts them),
            `-100` for positions that do not count. A pre-shifted `shift_labels` tensor may be passed as a
            keyword instead (all `seq_len` positions then count, as in nanochat's own training loop).
        logits_to_keep (`int` or `torch.Tensor`, defaults to 0):
            Compute logits only for the last `logits_to_keep` positions (0 = all) or for the given indices.

        With `self.loss_chunk_size` set, in training mode and with targets, `logits` is None (see the class).
        """
        outputs: BaseModelOutputWithPast = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,  # whatever config.return_dict says; this forward makes the tuple
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        has_targets = labels is not None or kwargs.get("shift_labels") is not None

        loss = logits = None
        if has_targets and self.training and self.loss_chunk_size:
            loss = chunked_softcap_cross_entropy(
                hidden_states, self.vocab_logits, self.config.softcap, self.loss_chunk_size, labels=labels, **kwargs
            )
        else:
            logits = self.softcap_logits(self.vocab_logits(hidden_states))
            if has_targets:
                loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


# The names these classes had before they were renamed away from transformers' built-in `NanoChat*` classes
# (tools that map an `architectures` entry to a class would load the built-in one). Folders saved then name
# them in `auto_map`, and code written then imports them.
NanoChatPreTrainedModel = NanoChatHFPreTrainedModel
NanoChatModel = NanoChatHFModel
NanoChatForCausalLM = NanoChatHFForCausalLM


__all__ = ["NanoChatHFPreTrainedModel", "NanoChatHFModel", "NanoChatHFForCausalLM"]
