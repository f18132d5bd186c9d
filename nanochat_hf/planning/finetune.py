"""GPU memory of chat fine-tuning (SFT / midtraining): full fine-tune, LoRA and QLoRA.

The companion of `plan.py` (pretraining) for `recipes/sft.py`. Activations, logits and fixed overheads
come from the same byte model (`memory.py`), as does the full fine-tune's state with nanochat's
optimizer; bytes per parameter for each method:

| method | frozen base | trained parameters (weights + grads + optimizer state) |
|---|---|---|
| full  | -                                    | fp32 4 + 4, nanochat: Muon momentum 4 (blocks) and AdamW 8 (wte, lm_head); AdamW 8; AdamW 8-bit ~2; autocast bf16 copies +2 |
| lora  | bf16 2                               | adapters fp32 4 + 4 + AdamW 8 (8-bit: ~2) |
| qlora | NF4 ~0.5 for block matrices (+ quantization constants), wte and lm_head bf16 2 | adapters bf16 (trl casts them) 2 + 2 + state 4 (8-bit: ~2) |

LoRA adds r x (in + out) parameters per targeted Linear. Activations are the eager estimate (fine-tuning
runs uncompiled), with or without per-block checkpointing; logits are the model's own float32 soft-capped
loss, whole or one chunk of `loss_chunk_size` tokens at a time. Plus the CUDA context and a 5 % allocator
margin.

RL (`recipes/rl.py`, `plan_rl`) is a fine-tune whose training pass holds `micro_batch` sampled sequences of
prompt + max_new_tokens tokens, plus what sampling adds: the KV cache of one question's samples generated
together (num_generations x (prompt + max_new_tokens) tokens, bf16 K and V per layer) and the rollout
buffers (token ids and masks, negligible). There is no reference model (nanochat's RL has no KL term).

    nanochat-hf plan-finetune --depth 32 --gpu rtx4070
    nanochat-hf plan-finetune --depth 32 --gpu rtx4070 --rl --num-generations 16 --max-new-tokens 256
"""

from dataclasses import asdict, dataclass, field

from nanochat_hf.defaults import LORA_TARGET_MODULES, SEQUENCE_LEN, VOCAB_SIZE
from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.flops import ModelShape, block_matrices, param_counts
from nanochat_hf.planning.gpus import GIB, get_gpu
from nanochat_hf.planning.memory import (
    CUDA_CONTEXT_BYTES,
    activation_bytes,
    allocator_margin_bytes,
    logits_bytes,
    static_memory,
)
from nanochat_hf.planning.memory_modes import MemoryKnobs


METHODS = ("full", "lora", "qlora")
DEFAULT_OPTIMIZER = {"full": "nanochat", "lora": "adamw", "qlora": "paged_adamw_8bit"}
OPTIMIZERS = ("nanochat", "adamw", "adamw_8bit", "paged_adamw_8bit")

# bitsandbytes NF4: two 4-bit values per byte, one absmax per block of 64 values; with double
# quantization the absmax are stored in 8 bits with one fp32 constant per 256 of them.
NF4_BYTES_PER_PARAM = 0.5
NF4_BLOCK = 64
DOUBLE_QUANT_BLOCK = 256
# 8-bit optimizer state (bitsandbytes, blockwise): 1 byte per value and state, 2 states for AdamW.
ADAMW_8BIT_BYTES = 2


def lora_parameter_count(shape: ModelShape, r: int, targets=LORA_TARGET_MODULES) -> int:
    """Parameters LoRA adds: r x (in + out) for each targeted Linear (`c_proj` names two per block)."""
    total = 0
    for layer in range(shape.n_layer):
        for tensor in block_matrices(shape, layer):
            module = tensor.name.split(".")[-2]
            if module in targets:
                total += r * (tensor.rows + tensor.cols)
    return total


def nf4_bytes(numel: int, double_quant: bool = True) -> int:
    """Storage of `numel` weights in bitsandbytes NF4, quantization constants included."""
    blocks = -(-numel // NF4_BLOCK)
    constants = blocks + 4 * -(-blocks // DOUBLE_QUANT_BLOCK) if double_quant else 4 * blocks
    return int(numel * NF4_BYTES_PER_PARAM) + constants


@dataclass
class FinetunePlan:
    method: str
    depth: int
    gpu: str
    gpu_memory_bytes: int
    micro_batch: int
    sequence_len: int
    optimizer: str
    activation_checkpointing: bool
    trained_params: int
    components: dict[str, int] = field(default_factory=dict)
    kind: str = "fine-tune"

    @property
    def total_bytes(self) -> int:
        return sum(self.components.values())

    @property
    def usable_bytes(self) -> int:
        return self.gpu_memory_bytes - allocator_margin_bytes(self.gpu_memory_bytes)

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.usable_bytes

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "total_bytes": self.total_bytes,
            "usable_bytes": self.usable_bytes,
            "fits": self.fits,
        }


def _trained_state_bytes(numel: int, weight_bytes: int, optimizer: str) -> tuple[int, int, int]:
    """(weights, gradients, optimizer state) of trained parameters in `weight_bytes` precision."""
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        state = ADAMW_8BIT_BYTES * numel
    else:
        state = 2 * weight_bytes * numel  # AdamW m and v in the parameter's dtype
    return weight_bytes * numel, weight_bytes * numel, state


def plan_finetune(
    depth: int = 32,
    method: str = "qlora",
    *,
    gpu: str = "rtx4070",
    micro_batch: int = 1,
    sequence_len: int = SEQUENCE_LEN,
    vocab_size: int = VOCAB_SIZE,
    lora_r: int = 16,
    lora_targets=LORA_TARGET_MODULES,
    optimizer: str | None = None,
    activation_checkpointing: bool = True,
    double_quant: bool = True,
    loss_chunk_size: int | None = None,
    shape: ModelShape | None = None,
) -> FinetunePlan:
    """Predicted peak GPU memory of one fine-tuning run, by component."""
    if method not in METHODS:
        raise UserInputError(f"method {method!r}: expected one of {METHODS}")
    optimizer = optimizer or DEFAULT_OPTIMIZER[method]
    if optimizer not in OPTIMIZERS:
        raise UserInputError(f"optimizer {optimizer!r}: expected one of {OPTIMIZERS}")
    if optimizer == "nanochat" and method != "full":
        raise UserInputError("the nanochat optimizer (Muon + AdamW) is for full fine-tunes; LoRA uses AdamW")
    shape = shape or ModelShape.from_depth(depth, vocab_size=vocab_size, sequence_len=sequence_len)
    gpu_spec = get_gpu(gpu)
    counts = param_counts(shape)
    head_and_embedding = counts.embedding + counts.lm_head
    components: dict[str, int] = {}

    if method == "full":
        # nanochat's own layout: fp32 weights and gradients on the GPU, eager autocast's bf16 weight copies,
        # and (optimizer "nanochat") fp32 Muon momentum for the blocks and AdamW for wte and lm_head.
        trained = counts.total
        static = static_memory(shape, MemoryKnobs(weight_cast_copies=True))
        state = static.gpu_optimizer_state
        if optimizer != "nanochat":
            state = _trained_state_bytes(trained, 4, optimizer)[2]
        components["weights (fp32)"] = static.gpu_weights
        components["gradients (fp32)"] = static.gpu_gradients
        components[f"optimizer state ({optimizer})"] = state
        components["autocast bf16 weight copies"] = static.gpu_weight_cast_copies
    else:
        trained = lora_parameter_count(shape, lora_r, lora_targets)
        if method == "lora":
            components["base weights (bf16, frozen)"] = 2 * counts.total
            adapter_bytes = 4  # peft keeps adapters in fp32
        else:
            components["base block weights (NF4, frozen)"] = nf4_bytes(counts.blocks, double_quant)
            components["wte + lm_head (bf16, frozen)"] = 2 * head_and_embedding
            # Each quantized matmul dequantizes its weight to bf16 for the duration of the product.
            largest = max(t.numel for t in block_matrices(shape, 0))
            components["dequantized weight (transient)"] = 2 * largest
            adapter_bytes = 2  # trl casts QLoRA adapters to bf16
        weights, grads, state = _trained_state_bytes(trained, adapter_bytes, optimizer)
        components["LoRA adapters"] = weights
        components["LoRA gradients"] = grads
        components[f"optimizer state ({optimizer})"] = state

    components["activations"] = activation_bytes(shape, micro_batch, activation_checkpointing)[1]  # eager
    logits = "logits and loss (fp32, chunked)" if loss_chunk_size else "logits and loss (fp32, soft-capped)"
    components[logits] = logits_bytes(shape, micro_batch, loss_chunk_size)
    components["CUDA context"] = CUDA_CONTEXT_BYTES
    return FinetunePlan(
        method=method,
        depth=shape.n_layer,
        gpu=gpu_spec.key,
        gpu_memory_bytes=gpu_spec.memory_bytes,
        micro_batch=micro_batch,
        sequence_len=shape.sequence_len,
        optimizer=optimizer,
        activation_checkpointing=activation_checkpointing,
        trained_params=trained,
        components=components,
    )


def kv_cache_bytes(shape: ModelShape, sequences: int, tokens: int, bytes_per_value: int = 2) -> int:
    """Keys and values of every layer for `sequences` x `tokens` positions (bf16 by default)."""
    return 2 * shape.n_layer * shape.n_kv_head * shape.head_dim * sequences * tokens * bytes_per_value


def plan_rl(
    depth: int = 32,
    method: str = "lora",
    *,
    gpu: str = "rtx4070",
    num_generations: int = 16,
    max_new_tokens: int = 256,
    prompt_len: int = 256,
    micro_batch: int = 8,
    vocab_size: int = VOCAB_SIZE,
    shape: ModelShape | None = None,
    **finetune_kwargs,
) -> FinetunePlan:
    """Predicted peak GPU memory of an RL run: the policy's fine-tune plus the rollouts' KV cache.

    nanochat's settings by default: 16 samples per question, 256 new tokens, passes of 8 sequences;
    `prompt_len` is the longest prompt (GSM8K questions rendered: under 256 tokens).
    """
    for name, value in (
        ("num_generations", num_generations),
        ("max_new_tokens", max_new_tokens),
        ("prompt_len", prompt_len),
        ("micro_batch", micro_batch),
    ):
        if value <= 0:
            raise UserInputError(f"{name} must be positive, got {value}")
    tokens = prompt_len + max_new_tokens
    shape = shape or ModelShape.from_depth(depth, vocab_size=vocab_size)
    shape = ModelShape(
        shape.n_layer, shape.n_embd, shape.n_head, shape.n_kv_head, shape.head_dim, shape.vocab_size, tokens
    )
    plan = plan_finetune(depth, method, gpu=gpu, micro_batch=micro_batch, shape=shape, **finetune_kwargs)
    kv = f"rollout KV cache ({num_generations} x {tokens} tokens, bf16)"
    plan.components[kv] = kv_cache_bytes(shape, num_generations, tokens)
    # Sampling's own logits: one position per sequence at a time, float32.
    plan.components["sampling logits (fp32)"] = 4 * num_generations * shape.vocab_size
    plan.kind = f"RL ({num_generations} samples x {max_new_tokens} new tokens)"
    return plan


def render_finetune_plan(plan: FinetunePlan) -> str:
    lines = [
        f"d{plan.depth} {plan.method} {plan.kind} on {plan.gpu} ({plan.gpu_memory_bytes / GIB:.1f} GiB): micro-batch "
        f"{plan.micro_batch} x {plan.sequence_len}, optimizer {plan.optimizer}, activation checkpointing "
        f"{'on' if plan.activation_checkpointing else 'off'}; {plan.trained_params:,} trained parameters",
    ]
    for name, n_bytes in plan.components.items():
        lines.append(f"  {name:<40} {n_bytes / GIB:7.2f} GiB")
    verdict = "fits" if plan.fits else "does NOT fit"
    lines.append(
        f"  {'total':<40} {plan.total_bytes / GIB:7.2f} GiB  ({verdict}: {plan.usable_bytes / GIB:.2f} GiB usable)"
    )
    return "\n".join(lines)
