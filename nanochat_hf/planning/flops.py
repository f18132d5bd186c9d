"""Parameter counts and training FLOPs of the nanochat GPT (generation 1), without building the model.

Everything here is integer arithmetic on the model's shapes, so the planner can size a d32 in
microseconds on any machine. The counts follow nanochat's own `GPT.estimate_flops` (nanochat/gpt.py):

    FLOPs/token = 6 * (N_total - N_wte) + 12 * L * n_head * head_dim * T

6 = 2 FLOPs per multiply-add x 3 matmuls (forward, grad-input, grad-weight) per weight; `lm_head` is
counted, the embedding lookup is not. The attention term counts the full T x T score matrix (the PaLM
convention), although causal flash attention does about half of that work.

For d32 (1,879,048,192 parameters, 134,217,728 of them in the embedding) this gives 12,079,595,520
FLOPs per token, the figure nanochat itself prints. How long a run is (the horizon) lives in `horizon.py`.
"""

import math
from dataclasses import dataclass

from nanochat_hf.defaults import NEWTON_SCHULZ_STEPS, SEQUENCE_LEN, VOCAB_SIZE


# nanochat's sizing rule (the same rule as NanoChatHFConfig.from_depth): width = 64 x depth, in heads of 128.
ASPECT_RATIO = 64
HEAD_DIM = 128


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

    @classmethod
    def from_depth(cls, depth: int, vocab_size: int = VOCAB_SIZE, sequence_len: int = SEQUENCE_LEN) -> "ModelShape":
        """Width 64*depth rounded up to a multiple of the 128-wide head (nanochat's 2026 rule).

        Every even depth gets generation 1's exact shapes; odd depths such as d21 (which generation 1
        cannot build: 1344 is not divisible by 11 heads) get the 2026 width, 1408 = 11 x 128.
        """
        if not isinstance(depth, int) or isinstance(depth, bool) or depth <= 0:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        n_embd = math.ceil(depth * ASPECT_RATIO / HEAD_DIM) * HEAD_DIM
        n_head = n_embd // HEAD_DIM
        return cls(depth, n_embd, n_head, n_head, HEAD_DIM, vocab_size, sequence_len)

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
        )

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
    group: str  # "embedding" (wte), "lm_head" or "matrix" (inside a block: Muon's parameters)

    @property
    def numel(self) -> int:
        return self.rows * self.cols


def block_matrices(shape: ModelShape, layer: int) -> list[ParamTensor]:
    d, q_dim, kv_dim = shape.n_embd, shape.n_head * shape.head_dim, shape.n_kv_head * shape.head_dim
    prefix = f"transformer.h.{layer}."
    return [
        ParamTensor(prefix + "attn.c_q.weight", q_dim, d, "matrix"),
        ParamTensor(prefix + "attn.c_k.weight", kv_dim, d, "matrix"),
        ParamTensor(prefix + "attn.c_v.weight", kv_dim, d, "matrix"),
        ParamTensor(prefix + "attn.c_proj.weight", d, q_dim, "matrix"),
        ParamTensor(prefix + "mlp.c_fc.weight", 4 * d, d, "matrix"),
        ParamTensor(prefix + "mlp.c_proj.weight", d, 4 * d, "matrix"),
    ]


def param_tensors(shape: ModelShape) -> list[ParamTensor]:
    """Every parameter of NanoChatHFForCausalLM, in `named_parameters()` order (no biases, untied head)."""
    tensors = [ParamTensor("transformer.wte.weight", shape.vocab_size, shape.n_embd, "embedding")]
    for layer in range(shape.n_layer):
        tensors += block_matrices(shape, layer)
    tensors.append(ParamTensor("lm_head.weight", shape.vocab_size, shape.n_embd, "lm_head"))
    return tensors


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int  # wte
    lm_head: int
    blocks: int  # all matrices inside transformer.h (Muon's parameters)

    @property
    def matmul(self) -> int:
        """Parameters that take part in a matmul: everything but the embedding lookup."""
        return self.total - self.embedding


def param_counts(shape: ModelShape) -> ParamCounts:
    by_group = {"embedding": 0, "lm_head": 0, "matrix": 0}
    for tensor in param_tensors(shape):
        by_group[tensor.group] += tensor.numel
    return ParamCounts(
        total=sum(by_group.values()),
        embedding=by_group["embedding"],
        lm_head=by_group["lm_head"],
        blocks=by_group["matrix"],
    )


def attention_flops_per_token(shape: ModelShape) -> int:
    """QK^T and AV over the full T x T square, forward + backward: 12 * L * n_head * head_dim * T."""
    return 12 * shape.n_layer * shape.n_head * shape.head_dim * shape.sequence_len


def flops_per_token(shape: ModelShape) -> int:
    """nanochat gen-1 `estimate_flops`: 6 * (N_total - N_wte) + 12 * L * n_head * head_dim * T."""
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
