"""Test fixtures for the generation-2 optimizer: a module with nanochat 2026's parameter names and shapes, and
the Polar Express coefficients typed out from the paper (independently of the implementation).

The module is NOT the generation-2 model: its forward is a toy language model that only has to give every parameter a
gradient (for Trainer tests). Shapes follow nanochat's GPT: per layer c_q (H·hd × d), c_k and c_v
(kv·hd × d), c_proj (d × d), c_fc (4d × d), mlp c_proj (d × 4d), ve_gate (kv × 12) on value-embedding
layers (alternate layers, the last included); wte and value_embeds (V × d and V × kv·hd), lm_head (V × d),
resid_lambdas and x0_lambdas (L), smear_gate (1 × 24), smear_lambda and backout_lambda (1).
`extras_under_transformer=True` puts the extras under `transformer.` (the HF model's layout) instead of at
the top level (nanochat's).
"""

import torch
import torch.nn.functional as F
from torch import nn


# Polar Express (arXiv 2505.16932; 5 iterations, safety factor 2e-2, cushion 2): (a, b, c) per iteration.
POLAR_EXPRESS_COEFFICIENTS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def has_value_embedding(layer, n_layer):
    return layer % 2 == (n_layer - 1) % 2


class _Attention(nn.Module):
    def __init__(self, n_embd, n_head, n_kv_head, with_gate):
        super().__init__()
        head_dim = n_embd // n_head
        self.c_q = nn.Linear(n_embd, n_head * head_dim, bias=False)
        self.c_k = nn.Linear(n_embd, n_kv_head * head_dim, bias=False)
        self.c_v = nn.Linear(n_embd, n_kv_head * head_dim, bias=False)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=False)
        if with_gate:
            self.ve_gate = nn.Linear(12, n_kv_head, bias=False)


class _MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=False)


class _Block(nn.Module):
    def __init__(self, n_embd, n_head, n_kv_head, with_gate):
        super().__init__()
        self.attn = _Attention(n_embd, n_head, n_kv_head, with_gate)
        self.mlp = _MLP(n_embd)


class _Trunk(nn.Module):
    pass


class Gen2ShapedStandIn(nn.Module):
    def __init__(self, n_layer=2, n_embd=64, n_head=2, n_kv_head=None, vocab_size=256, extras_under_transformer=False):
        super().__init__()
        n_kv_head = n_kv_head or n_head
        self.n_layer, self.n_head, self.n_kv_head = n_layer, n_head, n_kv_head
        kv_dim = n_kv_head * (n_embd // n_head)
        self.transformer = _Trunk()
        self.transformer.wte = nn.Embedding(vocab_size, n_embd)
        self.transformer.h = nn.ModuleList(
            [_Block(n_embd, n_head, n_kv_head, has_value_embedding(i, n_layer)) for i in range(n_layer)]
        )
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        holder = self.transformer if extras_under_transformer else self
        holder.resid_lambdas = nn.Parameter(torch.ones(n_layer))
        holder.x0_lambdas = nn.Parameter(torch.zeros(n_layer))
        holder.smear_gate = nn.Linear(24, 1, bias=False)
        holder.smear_lambda = nn.Parameter(torch.zeros(1))
        holder.backout_lambda = nn.Parameter(torch.full((1,), 0.2))
        holder.value_embeds = nn.ModuleDict(
            {str(i): nn.Embedding(vocab_size, kv_dim) for i in range(n_layer) if has_value_embedding(i, n_layer)}
        )
        self.extras_under_transformer = extras_under_transformer

    def forward(self, input_ids, labels=None, **_):
        """A toy causal LM touching every parameter (one attention head per kv group, no rotary)."""
        extras = self.transformer if self.extras_under_transformer else self
        x = F.rms_norm(self.transformer.wte(input_ids), (self.transformer.wte.embedding_dim,))
        gate = extras.smear_lambda * torch.sigmoid(extras.smear_gate(x[:, 1:, :24]))
        x = torch.cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]], dim=1)
        x0, backout = x, None
        for i, block in enumerate(self.transformer.h):
            x = extras.resid_lambdas[i] * x + extras.x0_lambdas[i] * x0
            h = F.rms_norm(x, (x.size(-1),))
            q, k, v = block.attn.c_q(h), block.attn.c_k(h), block.attn.c_v(h)
            if str(i) in extras.value_embeds:
                ve_gate = 3 * torch.sigmoid(block.attn.ve_gate(h[..., :12]))
                ve = extras.value_embeds[str(i)](input_ids)
                v = v + ve_gate.repeat_interleave(v.size(-1) // self.n_kv_head, dim=-1) * ve
            repeat = q.size(-1) // k.size(-1)
            k, v = k.repeat(1, 1, repeat), v.repeat(1, 1, repeat)
            x = x + block.attn.c_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True))
            x = x + block.mlp.c_proj(F.relu(block.mlp.c_fc(F.rms_norm(x, (x.size(-1),)))).square())
            if i == self.n_layer // 2:
                backout = x
        x = x - extras.backout_lambda * backout
        logits = self.lm_head(F.rms_norm(x, (x.size(-1),))).float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1))
        return {"loss": loss, "logits": logits}


def randomize(module, seed=0, scale=0.1):
    """Non-trivial values everywhere (zero-initialised or constant tensors would hide mistakes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return module


def set_random_grads(module, seed):
    generator = torch.Generator().manual_seed(seed)
    for param in module.parameters():
        param.grad = torch.randn(param.shape, generator=generator).to(param.dtype)
