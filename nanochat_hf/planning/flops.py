"""Parameter counts and training FLOPs of the nanochat GPT (both generations), without building the model.

Everything here is integer arithmetic on the model's shapes, so the planner can size a d32 in
microseconds on any machine. The counts follow nanochat's own `GPT.estimate_flops` (nanochat/gpt.py):

    FLOPs/token = 6 * (N_total - N_wte) + 12 * L * n_head * head_dim * T

6 = 2 FLOPs per multiply-add x 3 matmuls (forward, grad-input, grad-weight) per weight; `lm_head` is
counted, the embedding lookup is not. The attention term counts the full T x T score matrix (the PaLM
convention), although causal flash attention does about half of that work.

For d32 (1,879,048,192 parameters, 134,217,728 of them in the embedding) this gives 12,079,595,520
FLOPs per token, the figure nanochat itself prints. How long a run is (the horizon) lives in `horizon.py`.

Generation 2 (nanochat 2026, `generation=2`) counts as its `num_scaling_params` / `estimate_flops` do:

    groups: wte, value_embeds, lm_head (padded rows), transformer_matrices (every block weight, the value
            gates included), scalars (resid/x0 lambdas, smear gate, smear and backout lambdas)
    FLOPs/token = 6 * N_matmul + sum over layers of 12 * n_head * head_dim * min(window_left, T)

N_matmul = every Linear weight: the block matrices, `lm_head` and the 24-weight smear gate (embeddings,
value embeddings and scalars are lookups or elementwise). Generation 1's formula is this one with every
window = T. The scaling parameters of nanochat 2026's recipe (`scaling_params`) are the block matrices +
`lm_head`; this module is their one source (`optim/scaling_gen2.py` uses it).
"""

import math
from dataclasses import dataclass

from nanochat_hf.defaults import NEWTON_SCHULZ_STEPS, SEQUENCE_LEN, VOCAB_SIZE


# nanochat's sizing rule (the same rule as NanoChatHFConfig.from_depth): width = 64 x depth, in heads of 128.
ASPECT_RATIO = 64
HEAD_DIM = 128
GEN2_VOCAB_SIZE = 32768
GEN2_PAD_VOCAB_TO = 64
GEN2_WINDOW_PATTERN = "SSSL"
VE_GATE_CHANNELS = 12
SMEAR_GATE_CHANNELS = 24
WINDOW_TILE = 128


@dataclass(frozen=True)
class ModelShape:
    """The shape fields of a NanoChatHFConfig; enough to count parameters, FLOPs and memory."""

    n_layer: int
    n_embd: int
    n_head: int
    n_kv_head: int
    head_dim: int
    vocab_size: int = VOCAB_SIZE
    sequence_len: int = SEQUENCE_LEN
    # Generation 2's features (all off: generation 1).
    value_embeddings: bool = False
    layer_lambdas: bool = False
    smear: bool = False
    backout: bool = False
    window_pattern: str = "L"
    pad_vocab_size_to: int = 1
    ve_gate_channels: int = VE_GATE_CHANNELS
    # Which optimizer and memory modes train it: generation 2's MuonAdamW keeps NorMuon's second moment.
    generation: int = 1

    @classmethod
    def from_depth(
        cls,
        depth: int,
        vocab_size: int | None = None,
        sequence_len: int = SEQUENCE_LEN,
        generation: int = 1,
        aspect_ratio: int = ASPECT_RATIO,
        head_dim: int = HEAD_DIM,
        window_pattern: str = GEN2_WINDOW_PATTERN,
    ) -> "ModelShape":
        """Width 64*depth rounded up to a multiple of the 128-wide head (nanochat's 2026 rule).

        Every even depth gets generation 1's exact shapes; odd depths such as d21 (which generation 1
        cannot build: 1344 is not divisible by 11 heads) get the 2026 width, 1408 = 11 x 128.
        `generation=2` adds its features and its 32,768-token vocabulary (unless `vocab_size` is given).
        """
        if not isinstance(depth, int) or isinstance(depth, bool) or depth <= 0:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        if generation not in (1, 2):
            raise ValueError(f"generation must be 1 or 2, got {generation!r}")
        n_embd = math.ceil(depth * aspect_ratio / head_dim) * head_dim
        n_head = n_embd // head_dim
        if generation == 1:
            return cls(depth, n_embd, n_head, n_head, head_dim, vocab_size or VOCAB_SIZE, sequence_len)
        return cls(
            depth,
            n_embd,
            n_head,
            n_head,
            head_dim,
            vocab_size or GEN2_VOCAB_SIZE,
            sequence_len,
            value_embeddings=True,
            layer_lambdas=True,
            smear=True,
            backout=True,
            window_pattern=window_pattern,
            pad_vocab_size_to=GEN2_PAD_VOCAB_TO,
            generation=2,
        )

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """Read the shape from a NanoChatHFConfig (or anything with the same field names)."""
        return cls(
            n_layer=config.n_layer,
            n_embd=config.n_embd,
            n_head=config.n_head,
            n_kv_head=config.n_kv_head,
            head_dim=config.head_dim,
            vocab_size=config.vocab_size,
            sequence_len=config.sequence_len,
            value_embeddings=bool(getattr(config, "value_embeddings", False)),
            layer_lambdas=bool(getattr(config, "layer_lambdas", False)),
            smear=bool(getattr(config, "smear", False)),
            backout=bool(getattr(config, "backout", False)),
            window_pattern=getattr(config, "window_pattern", "L") or "L",
            pad_vocab_size_to=getattr(config, "pad_vocab_size_to", 1) or 1,
            generation=getattr(config, "generation", 1) or 1,
        )

    @property
    def padded_vocab(self) -> int:
        return -(-self.vocab_size // self.pad_vocab_size_to) * self.pad_vocab_size_to

    @property
    def window_lefts(self) -> list[int]:
        """Per layer, the earlier keys a query sees: `window_pattern` tiled, S = ceil(T/4/128)*128, last = T."""
        short = -(-self.sequence_len // 4 // WINDOW_TILE) * WINDOW_TILE
        pattern = self.window_pattern
        lefts = [self.sequence_len if pattern[i % len(pattern)] == "L" else short for i in range(self.n_layer)]
        lefts[-1] = self.sequence_len
        return lefts

    @property
    def value_embedding_layers(self) -> list[int]:
        """Alternate layers counted back from the last (which always has one)."""
        if not self.value_embeddings:
            return []
        return [i for i in range(self.n_layer) if i % 2 == (self.n_layer - 1) % 2]

    @property
    def gen1_buildable(self) -> bool:
        """Whether generation 1's own rule (n_head = ceil(64*L/128), no width rounding) builds this depth."""
        width = ASPECT_RATIO * self.n_layer
        return width % max(1, math.ceil(width / HEAD_DIM)) == 0


@dataclass(frozen=True)
class ParamTensor:
    """One weight matrix, named exactly as the model names it; shape is (out_features, in_features)."""

    name: str
    rows: int
    cols: int
    # "embedding" (wte), "lm_head", "matrix" (inside a block: Muon's parameters), and in generation 2
    # "value_embeds" and "scalar" (resid/x0 lambdas, smear gate, smear and backout lambdas; vectors are rows x 1).
    group: str

    @property
    def numel(self) -> int:
        return self.rows * self.cols


def block_matrices(shape: ModelShape, layer: int) -> list[ParamTensor]:
    d, q_dim, kv_dim = shape.n_embd, shape.n_head * shape.head_dim, shape.n_kv_head * shape.head_dim
    prefix = f"transformer.h.{layer}."
    tensors = [
        ParamTensor(prefix + "attn.c_q.weight", q_dim, d, "matrix"),
        ParamTensor(prefix + "attn.c_k.weight", kv_dim, d, "matrix"),
        ParamTensor(prefix + "attn.c_v.weight", kv_dim, d, "matrix"),
        ParamTensor(prefix + "attn.c_proj.weight", d, q_dim, "matrix"),
    ]
    if layer in shape.value_embedding_layers:
        tensors.append(ParamTensor(prefix + "attn.ve_gate.weight", shape.n_kv_head, shape.ve_gate_channels, "matrix"))
    return tensors + [
        ParamTensor(prefix + "mlp.c_fc.weight", 4 * d, d, "matrix"),
        ParamTensor(prefix + "mlp.c_proj.weight", d, 4 * d, "matrix"),
    ]


def param_tensors(shape: ModelShape) -> list[ParamTensor]:
    """Every parameter of NanoChatHFForCausalLM, in `named_parameters()` order (no biases, untied head)."""
    vocab, d = shape.padded_vocab, shape.n_embd
    tensors = []
    if shape.layer_lambdas:
        tensors += [
            ParamTensor("transformer.resid_lambdas", shape.n_layer, 1, "scalar"),
            ParamTensor("transformer.x0_lambdas", shape.n_layer, 1, "scalar"),
        ]
    if shape.smear:
        tensors.append(ParamTensor("transformer.smear_lambda", 1, 1, "scalar"))
    if shape.backout:
        tensors.append(ParamTensor("transformer.backout_lambda", 1, 1, "scalar"))
    tensors.append(ParamTensor("transformer.wte.weight", vocab, d, "embedding"))
    for layer in range(shape.n_layer):
        tensors += block_matrices(shape, layer)
    if shape.smear:
        tensors.append(ParamTensor("transformer.smear_gate.weight", 1, SMEAR_GATE_CHANNELS, "scalar"))
    kv_dim = shape.n_kv_head * shape.head_dim
    for layer in shape.value_embedding_layers:
        tensors.append(ParamTensor(f"transformer.value_embeds.{layer}.weight", vocab, kv_dim, "value_embeds"))
    tensors.append(ParamTensor("lm_head.weight", vocab, d, "lm_head"))
    return tensors


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int  # wte
    lm_head: int
    blocks: int  # all matrices inside transformer.h (Muon's parameters), value gates included
    value_embeds: int = 0
    scalars: int = 0  # resid/x0 lambdas, smear gate, smear and backout lambdas
    smear_gate: int = 0  # the one Linear among the scalars

    @property
    def matmul(self) -> int:
        """Parameters that take part in a matmul (every Linear): blocks, lm_head, smear gate."""
        return self.blocks + self.lm_head + self.smear_gate

    @property
    def scaling(self) -> int:
        """nanochat 2026's scaling parameters: the block matrices + lm_head."""
        return self.blocks + self.lm_head

    def by_group(self) -> dict[str, int]:
        """The groups of nanochat's `num_scaling_params()`, under its names."""
        return {
            "wte": self.embedding,
            "value_embeds": self.value_embeds,
            "lm_head": self.lm_head,
            "transformer_matrices": self.blocks,
            "scalars": self.scalars,
            "total": self.total,
        }


def param_counts(shape: ModelShape) -> ParamCounts:
    by_group = {"embedding": 0, "lm_head": 0, "matrix": 0, "value_embeds": 0, "scalar": 0}
    for tensor in param_tensors(shape):
        by_group[tensor.group] += tensor.numel
    return ParamCounts(
        total=sum(by_group.values()),
        embedding=by_group["embedding"],
        lm_head=by_group["lm_head"],
        blocks=by_group["matrix"],
        value_embeds=by_group["value_embeds"],
        scalars=by_group["scalar"],
        smear_gate=SMEAR_GATE_CHANNELS if shape.smear else 0,
    )


def attention_flops_per_token(shape: ModelShape) -> int:
    """QK^T and AV, forward + backward: 12 * n_head * head_dim * min(window, T) per layer (PaLM's square count,
    capped by the window); generation 1 (no windows) gives 12 * L * n_head * head_dim * T."""
    per_key = 12 * shape.n_head * shape.head_dim
    return sum(per_key * min(left, shape.sequence_len) for left in shape.window_lefts)


def flops_per_token(shape: ModelShape) -> int:
    """nanochat's `estimate_flops`: 6 * N_matmul + the attention term (gen 1: N_matmul = N_total - N_wte)."""
    return 6 * param_counts(shape).matmul + attention_flops_per_token(shape)


def recompute_flops_per_token(shape: ModelShape) -> int:
    """Extra FLOPs of per-block activation checkpointing: one more forward pass of every block.

    The forward is one third of the 6N and attention terms: 2 * N_blocks + 4 * L * n_head * head_dim * T.
    `lm_head` is outside the checkpointed blocks and is not recomputed.
    """
    return 2 * param_counts(shape).blocks + attention_flops_per_token(shape) // 3


def newton_schulz_flops(shape: ModelShape, steps: int = NEWTON_SCHULZ_STEPS) -> int:
    """FLOPs of Muon's orthogonalisation for one optimizer step, over every block matrix.

    Per iteration on an m x n matrix with m <= n (nanochat transposes tall ones): A = X X^T (2 m^2 n),
    A @ A (2 m^3), B @ X (2 m^2 n) = 4 m^2 n + 2 m^3; for d32 that is 8.25e13 FLOPs per step.
    """
    total = 0
    for tensor in param_tensors(shape):
        if tensor.group == "matrix":
            m, n = sorted((tensor.rows, tensor.cols))
            total += steps * (4 * m * m * n + 2 * m**3)
    return total
