"""Memory modes: the knob table, the quality rules, and static memory predicted to the byte.

The byte-exact tests build what each mode keeps, with real tensors on the CPU: the model in the mode's
dtypes, gradients from a real backward pass, nanochat's optimizer (`build_optimizer`) after one step,
bitsandbytes' AdamW8bit and blockwise quantisation for the 8-bit state, and fp32 master weights, fp32
gradient sums and the GPU gradient bucket for the offloading modes. The planner's prediction must equal
the bytes of those tensors exactly.
"""

import copy
import dataclasses

import pytest
import torch

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.errors import UserInputError
from nanochat_hf.optim import build_optimizer
from nanochat_hf.planning.flops import ModelShape, param_tensors
from nanochat_hf.planning.memory import static_memory
from nanochat_hf.planning.memory_modes import (
    KNOB_NAMES,
    MEMORY_MODES,
    MIN_8BIT_NUMEL,
    MODE_ORDER,
    QUANT_BLOCK_SIZE,
    MemoryKnobs,
    knobs_for_mode,
    parse_knob_assignment,
)


TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Tiny shapes covering: a matrix under bitsandbytes' 4,096-value 8-bit threshold (c_k/c_v with one
# 32-wide kv head), one exactly at it (64 x 64), GQA, and several depths.
TINY_CONFIGS = [
    dict(n_layer=2, n_embd=64, n_head=2, n_kv_head=1, vocab_size=512, sequence_len=16),
    dict(n_layer=3, n_embd=128, n_head=2, n_kv_head=2, vocab_size=1024, sequence_len=16),
    dict(n_layer=4, n_embd=256, n_head=4, n_kv_head=2, vocab_size=256, sequence_len=16),
]


def tensor_bytes(tensors) -> int:
    """Bytes of distinct tensors (shared ones, like bitsandbytes' code books, count once)."""
    seen, total = set(), 0
    for tensor in tensors:
        if not isinstance(tensor, torch.Tensor) or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total


def state_tensors(optimizer) -> list[torch.Tensor]:
    return [value for state in optimizer.state.values() for value in state.values() if isinstance(value, torch.Tensor)]


def backward_once(model: NanoChatHFForCausalLM, config: NanoChatHFConfig, autocast: bool) -> None:
    ids = torch.randint(0, config.vocab_size, (1, config.sequence_len), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(ids, labels=ids).loss
    loss.backward()


def measure_on_gpu_modes(config: NanoChatHFConfig, knobs: MemoryKnobs) -> dict[str, int]:
    """Modes without offloading: everything lives in the model, its .grad and the optimizer."""
    torch.manual_seed(0)
    model = NanoChatHFForCausalLM(config)
    model.transformer.wte.to(TORCH_DTYPES[knobs.embedding_dtype])
    model.lm_head.to(TORCH_DTYPES[knobs.weights_dtype])
    model.transformer.h.to(TORCH_DTYPES[knobs.weights_dtype])
    backward_once(model, config, autocast=knobs.embedding_dtype != knobs.weights_dtype)
    params = list(model.parameters())
    optimizer_tensors = optimizer_state_after_one_step(model, knobs)
    # The bf16 casts eager autocast caches: one per fp32 matmul weight (every parameter but the lookup).
    casts = [
        p.detach().to(torch.bfloat16)
        for name, p in model.named_parameters()
        if knobs.weight_cast_copies and p.dtype == torch.float32 and name != "transformer.wte.weight"
    ]
    return {
        "gpu_weights": tensor_bytes(params),
        "gpu_gradients": tensor_bytes(p.grad for p in params),
        "gpu_optimizer_state": tensor_bytes(optimizer_tensors),
        "gpu_weight_cast_copies": tensor_bytes(casts),
        "cpu_master_weights": 0,
        "cpu_gradients": 0,
        "cpu_optimizer_state": 0,
        "cpu_pinned_staging": 0,
    }


def optimizer_state_after_one_step(model: NanoChatHFForCausalLM, knobs: MemoryKnobs) -> list[torch.Tensor]:
    """The optimizer state tensors a mode keeps, after one real step on `model` (grads already set)."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnb_functional

    optimizer = build_optimizer(model)
    edge_params = [model.transformer.wte.weight, model.lm_head.weight]
    if knobs.adamw_state == "8bit":
        # AdamW for wte/lm_head from bitsandbytes; nanochat's optimizer keeps only the Muon groups.
        optimizer.param_groups = [group for group in optimizer.param_groups if group["kind"] == "muon"]
        adamw8 = bnb.optim.AdamW8bit(edge_params, lr=1e-3)
        adamw8.step()
    optimizer.step()
    tensors = state_tensors(optimizer)
    if knobs.adamw_state == "8bit":
        tensors += state_tensors(adamw8)
    if knobs.muon_momentum == "8bit":
        # Quantise each real momentum buffer blockwise as the 8-bit mode stores it (small ones stay fp32).
        # bitsandbytes returns its (identical) 256-entry code book with every call; the mode keeps one.
        quantized, code_books = [], []
        for state in optimizer.state.values():
            buffer = state.get("momentum_buffer")
            if buffer is None:
                continue
            if buffer.numel() >= MIN_8BIT_NUMEL:
                codes, quant_state = bnb_functional.quantize_blockwise(buffer, blocksize=QUANT_BLOCK_SIZE)
                quantized += [codes, quant_state.absmax]
                code_books.append(quant_state.code)
            else:
                quantized.append(buffer)
        assert all(torch.equal(code, code_books[0]) for code in code_books)
        quantized += code_books[:1]
        adam_tensors = [t for p in edge_params for t in optimizer.state.get(p, {}).values() if torch.is_tensor(t)]
        tensors = adam_tensors + quantized + (state_tensors(adamw8) if knobs.adamw_state == "8bit" else [])
    return tensors


def measure_offload_modes(config: NanoChatHFConfig, knobs: MemoryKnobs) -> dict[str, int]:
    """The offloading modes: bf16 model on the 'GPU'; fp32 master, gradient sums and optimizer on the CPU."""
    torch.manual_seed(0)
    master = NanoChatHFForCausalLM(config)  # fp32: the CPU master copy
    gpu_model = copy.deepcopy(master).to(torch.bfloat16)
    backward_once(gpu_model, config, autocast=False)
    # What sits on the GPU at once: the bucket of `grad_bucket_layers` blocks plus wte's and lm_head's.
    bucket = [
        p.grad
        for name, p in gpu_model.named_parameters()
        if not name.startswith("transformer.h.")
        or int(name.split(".")[2]) < min(knobs.grad_bucket_layers, config.n_layer)
    ]
    pinned = [torch.empty_like(grad, device="cpu") for grad in bucket]
    if knobs.grad_flush_every > 1:  # between flushes every gradient stays on the GPU; staging stays a bucket
        bucket = [p.grad for p in gpu_model.parameters()]
    # fp32 accumulators on the CPU receive the streamed bf16 gradients; the optimizer steps the master.
    for master_param, gpu_param in zip(master.parameters(), gpu_model.parameters(), strict=True):
        master_param.grad = torch.zeros_like(master_param, dtype=torch.float32)
        master_param.grad += gpu_param.grad.float()
    return {
        "gpu_weights": tensor_bytes(gpu_model.parameters()),
        "gpu_gradients": tensor_bytes(bucket),
        "gpu_optimizer_state": 0,
        "gpu_weight_cast_copies": 0,
        "cpu_master_weights": tensor_bytes(master.parameters()),
        "cpu_gradients": tensor_bytes(p.grad for p in master.parameters()),
        "cpu_optimizer_state": tensor_bytes(optimizer_state_after_one_step(master, knobs)),
        "cpu_pinned_staging": tensor_bytes(pinned),
    }


@pytest.mark.parametrize("config_kwargs", TINY_CONFIGS, ids=lambda c: f"L{c['n_layer']}-d{c['n_embd']}")
@pytest.mark.parametrize("mode", MODE_ORDER)
def test_static_memory_is_exact_to_the_byte(config_kwargs, mode):
    config = NanoChatHFConfig(**config_kwargs)
    knobs = MEMORY_MODES[mode]
    measured = (measure_offload_modes if knobs.offloads else measure_on_gpu_modes)(config, knobs)
    predicted = dataclasses.asdict(static_memory(ModelShape.from_config(config), knobs))
    assert predicted == measured


@pytest.mark.parametrize(
    "overrides",
    [
        dict(muon_momentum="8bit"),  # 8-bit Muon momentum alone, fp32 AdamW
        dict(adamw_state="8bit", weight_cast_copies=True),
        dict(grad_bucket_layers=1),
        dict(grad_flush_every=4),
    ],
)
def test_single_knobs_are_exact_to_the_byte(overrides):
    config = NanoChatHFConfig(**TINY_CONFIGS[1])
    mode = "12gb" if {"grad_bucket_layers", "grad_flush_every"} & set(overrides) else "24gb"
    knobs = dataclasses.replace(MEMORY_MODES[mode], **{"muon_momentum": "full", "adamw_state": "full", **overrides})
    measured = (measure_offload_modes if knobs.offloads else measure_on_gpu_modes)(config, knobs)
    assert dataclasses.asdict(static_memory(ModelShape.from_config(config), knobs)) == measured


def test_param_tensors_match_the_model():
    config = NanoChatHFConfig(**TINY_CONFIGS[0])
    model = NanoChatHFForCausalLM(config)
    predicted = [(t.name, (t.rows, t.cols)) for t in param_tensors(ModelShape.from_config(config))]
    assert predicted == [(name, tuple(p.shape)) for name, p in model.named_parameters()]


# ---------------------------------------------------------------------------------------------------------
# The knob table and its rules


def test_modes_follow_the_spec_conclusions():
    # The modes of the d32 fit table: full, 24gb, 12gb, and 12gb with checkpointing (8gb).
    full, j, h, h8 = (MEMORY_MODES[m] for m in MODE_ORDER)
    assert (full.weights_dtype, full.embedding_dtype, full.weight_cast_copies) == ("float32", "bfloat16", True)
    assert (j.weights_dtype, j.muon_momentum, j.adamw_state, j.optimizer_location) == (
        "float32",
        "8bit",
        "8bit",
        "gpu",
    )
    assert (h.weights_dtype, h.master_weights, h.grad_accumulation, h.optimizer_location) == (
        "bfloat16",
        "cpu",
        "cpu",
        "cpu",
    )
    assert h.activation_checkpointing == "none" and h8.activation_checkpointing == "block"
    assert dataclasses.replace(h8, activation_checkpointing="none") == h
    assert all(knobs.loss_chunk_size for knobs in MEMORY_MODES.values())


def test_knobs_for_mode_overrides_and_errors():
    knobs = knobs_for_mode("12gb", micro_batch=2, activation_checkpointing="block")
    assert knobs.micro_batch == 2 and knobs.activation_checkpointing == "block" and knobs.master_weights == "cpu"
    with pytest.raises(UserInputError, match="unknown memory mode 'auto'.*full, 24gb, 12gb, 8gb"):
        knobs_for_mode("auto")
    with pytest.raises(UserInputError, match="unknown memory knob.*offload_everything"):
        knobs_for_mode("full", offload_everything=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(weights_dtype="bfloat16", embedding_dtype="bfloat16"), "fp32 master copy"),
        (dict(weights_dtype="bfloat16", master_weights="cpu", optimizer_location="cpu"), "summed in bf16"),
        (dict(master_weights="cpu", optimizer_location="cpu"), "only makes sense with"),
        (dict(weights_dtype="bfloat16", master_weights="cpu", grad_accumulation="cpu"), "same place"),
        (dict(grad_accumulation="cpu"), "needs `master_weights: cpu`"),
        (dict(weights_dtype="float16"), "weights_dtype"),
        (dict(muon_momentum="4bit"), "muon_momentum"),
        (dict(micro_batch=0), "micro_batch"),
        (dict(grad_bucket_layers=0), "grad_bucket_layers"),
        (dict(grad_flush_every=2), "only applies to `grad_accumulation: cpu`"),
        (dict(grad_flush_every=0), "grad_flush_every"),
    ],
)
def test_quality_rules_and_bad_values_are_refused(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        MemoryKnobs(**kwargs)


def test_parse_knob_assignment_converts_types():
    assert parse_knob_assignment("activation_checkpointing=block") == ("activation_checkpointing", "block")
    assert parse_knob_assignment("micro_batch=4") == ("micro_batch", 4)
    assert parse_knob_assignment("micro_batch=auto") == ("micro_batch", None)
    assert parse_knob_assignment("chunked_loss=false") == ("chunked_loss", False)
    assert parse_knob_assignment("grad_bucket_layers = 3") == ("grad_bucket_layers", 3)
    for bad in ("micro_batch", "nope=1", "micro_batch=two", "chunked_loss=maybe"):
        with pytest.raises(UserInputError):
            parse_knob_assignment(bad)
    assert set(KNOB_NAMES) == {f.name for f in dataclasses.fields(MemoryKnobs)}


def test_describe_names_where_things_live():
    assert "fp32 master copy in CPU RAM" in MEMORY_MODES["12gb"].describe()
    assert "activation checkpointing: block" in MEMORY_MODES["8gb"].describe()
    assert "Muon momentum 8bit" in MEMORY_MODES["24gb"].describe()
