"""Parameter counts and training FLOPs of the nanochat GPT (generation 1), without building the model.

Everything here is integer arithmetic on the model's shapes, so the planner can size a d32 in
microseconds on any machine. The counts follow nanochat's own `GPT.estimate_flops` (spec:
nanochat-facts.md §4.1, hardware-and-budget.md §2.1):

    FLOPs/token = 6 * (N_total - N_wte) + 12 * L * n_head * head_dim * T

6 = 2 FLOPs per multiply-add x 3 matmuls (forward, grad-input, grad-weight) per weight; `lm_head` is
counted, the embedding lookup is not. The attention term counts the full T x T score matrix (the PaLM
convention), although causal flash attention does about half of that work.

The training horizon is generation 1's: `iterations = floor(ratio * N_total / total_batch)`, with the
Chinchilla ratio 20 applied to *all* parameters, embeddings included (computed by the recipe's own
`training_plan.num_training_steps`).
"""

import math
from dataclasses import dataclass


# nanochat's sizing rule (nanochat-facts.md §1.2; the same rule as NanoChatConfig.from_depth).
ASPECT_RATIO = 64
HEAD_DIM = 128
VOCAB_SIZE = 65536
SEQUENCE_LEN = 2048
# nanochat gen-1 base_train.py: 2**19 tokens per optimizer step, Chinchilla ratio 20 (nanochat-facts.md §6.1).
TOTAL_BATCH_TOKENS = 524288
PARAM_DATA_RATIO = 20
# Muon's Newton-Schulz orthogonalisation runs 5 iterations (nanochat-facts.md §5.1).
NEWTON_SCHULZ_STEPS = 5


@dataclass(frozen=True)
class ModelShape:
    """The shape fields of a NanoChatConfig; enough to count parameters, FLOPs and memory."""

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
        cannot build: 1344 is not divisible by 11 heads) get the 2026 width, 1408 (spec §2.2).
        """
        if not isinstance(depth, int) or isinstance(depth, bool) or depth <= 0:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        n_embd = math.ceil(depth * ASPECT_RATIO / HEAD_DIM) * HEAD_DIM
        n_head = n_embd // HEAD_DIM
        return cls(depth, n_embd, n_head, n_head, HEAD_DIM, vocab_size, sequence_len)

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """Read the shape from a NanoChatConfig (or anything with the same field names)."""
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
    """Every parameter of NanoChatForCausalLM, in `named_parameters()` order (no biases, untied head)."""
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


@dataclass(frozen=True)
class Horizon:
    total_batch_tokens: int
    iterations: int
    tokens: int
    total_flops: int
    tokens_per_param: float


def training_horizon(
    shape: ModelShape,
    *,
    ratio: float | None = None,
    tokens: float | None = None,
    total_batch_tokens: int = TOTAL_BATCH_TOKENS,
) -> Horizon:
    """How long pretraining runs: `ratio` x all parameters (gen-1 default 20) or `tokens`.

    Rounded down to whole optimizer steps of `total_batch_tokens` by the recipe's own rule
    (`training_plan.num_training_steps`), so the planner and the run agree on the step count.
    """
    from nanochat_hf.training_plan import num_training_steps

    if ratio is not None and tokens is not None:
        raise ValueError("give either ratio or tokens, not both")
    n_total = param_counts(shape).total
    iterations, _ = num_training_steps(
        n_total,
        total_batch_tokens,
        target_tokens=-1 if tokens is None else int(tokens),
        target_param_data_ratio=PARAM_DATA_RATIO if ratio is None else ratio,
    )
    train_tokens = iterations * total_batch_tokens
    return Horizon(
        total_batch_tokens=total_batch_tokens,
        iterations=iterations,
        tokens=train_tokens,
        total_flops=train_tokens * flops_per_token(shape),
        tokens_per_param=train_tokens / n_total,
    )


def newton_schulz_flops(shape: ModelShape, steps: int = NEWTON_SCHULZ_STEPS) -> int:
    """FLOPs of Muon's orthogonalisation for one optimizer step, over every block matrix.

    Per iteration on an m x n matrix with m <= n (nanochat transposes tall ones): A = X X^T (2 m^2 n),
    A @ A (2 m^3), B @ X (2 m^2 n) = 4 m^2 n + 2 m^3 (hardware-and-budget.md §4.6: 8.25e13 for d32).
    """
    total = 0
    for tensor in param_tensors(shape):
        if tensor.group == "matrix":
            m, n = sorted((tensor.rows, tensor.cols))
            total += steps * (4 * m * m * n + 2 * m**3)
    return total
