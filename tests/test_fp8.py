"""FP8 training matmuls (`nanochat_hf.fp8`): which layers, torchao's conversion, bf16 evaluation, a GPU run.

torchao's float8 matmuls (`torch._scaled_mm`) also run on the CPU in the torch installed here, so the
conversion and the bf16 evaluation swap are exercised without a GPU; the recipe itself refuses `--fp8` on
the CPU (tests/test_pretraining_gen2.py, tests/test_memory_knobs.py).
"""

import copy
import math

import pytest
import torch
from torch import nn

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.callbacks import ValBpbCallback
from nanochat_hf.callbacks.val_bpb import evaluate_bpb
from nanochat_hf.fp8 import enable_fp8, fp8_disabled, fp8_module_filter, fp8_module_names
from nanochat_hf.optim.setup_gen2 import build_gen2_training


pytestmark = pytest.mark.usefixtures("one_cpu_thread")

BLOCK_MATRICES = ["attn.c_q", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]  # c_k, c_v: 64 outputs < 128


def tiny_gen2(seed=0, **overrides) -> NanoChatHFForCausalLM:
    torch.manual_seed(seed)
    settings = dict(generation=2, n_layer=2, n_embd=128, n_head=2, n_kv_head=1, vocab_size=256, sequence_len=64)
    return NanoChatHFForCausalLM(NanoChatHFConfig(**{**settings, **overrides}))


def float8_names(model) -> list[str]:
    float8 = pytest.importorskip("torchao.float8.float8_linear").Float8Linear
    return [name for name, module in model.named_modules() if isinstance(module, float8)]


def test_generation2_converts_nanochats_layers():
    model = tiny_gen2()
    # nanochat 2026's filter: dims divisible by 16 and both >= 128. lm_head (128 -> 256) is converted;
    # c_k/c_v (128 -> 64), the value-embedding gate (12 -> 1) and the smear gate (24 -> 1) are not.
    expected = [f"transformer.h.{i}.{name}" for i in range(2) for name in BLOCK_MATRICES] + ["lm_head"]
    assert fp8_module_names(model) == expected
    assert model.transformer.h[1].attn.ve_gate is not None and model.transformer.smear_gate is not None
    assert not any("value_embeds" in name or "wte" in name for name in fp8_module_names(model))
    # A wider model: c_k/c_v reach 128 outputs and join.
    wider = fp8_module_names(tiny_gen2(n_embd=256, n_head=2, n_kv_head=1))
    assert "transformer.h.0.attn.c_k" in wider and "transformer.h.0.attn.c_v" in wider


def test_generation1_keeps_lm_head_in_bf16_and_needs_dims_divisible_by_16():
    model = NanoChatHFForCausalLM(NanoChatHFConfig(n_layer=1, n_embd=64, n_head=4, n_kv_head=2, vocab_size=256))
    names = fp8_module_names(model)
    assert "lm_head" not in names and "transformer.h.0.attn.c_k" in names  # 64 -> 32: gen 1 has no 128 floor
    assert not fp8_module_filter(nn.Linear(24, 64), "x", generation=1)
    assert not fp8_module_filter(nn.Linear(128, 136), "x", generation=2)
    assert not fp8_module_filter(nn.Embedding(128, 128), "wte", generation=2)


def test_enable_fp8_converts_exactly_the_named_layers_sharing_their_weights():
    model = tiny_gen2()
    names = fp8_module_names(model)
    weights = {name: model.get_submodule(name).weight for name in names}
    keys = list(model.state_dict())
    assert enable_fp8(model) == names
    assert float8_names(model) == names
    assert all(model.get_submodule(name).weight is weight for name, weight in weights.items())
    assert list(model.state_dict()) == keys  # checkpoints keep their names
    config = model.lm_head.config
    assert config.cast_config_input.target_dtype == torch.float8_e4m3fn
    assert config.cast_config_weight.target_dtype == torch.float8_e4m3fn
    assert config.cast_config_grad_output.target_dtype == torch.float8_e5m2
    assert config.cast_config_input.scaling_granularity.value == "tensorwise"
    assert config.gemm_config_output.use_fast_accum and not config.gemm_config_grad_input.use_fast_accum


def logits(model, ids):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(input_ids=ids).logits


def test_fp8_disabled_evaluates_in_bf16_and_restores_fp8():
    reference = tiny_gen2().eval()
    model = copy.deepcopy(reference)
    enable_fp8(model)
    ids = torch.randint(0, 256, (2, 32))
    converted = float8_names(model)
    head_weight = model.lm_head.weight
    fp8_logits = logits(model, ids)
    assert not torch.equal(fp8_logits, logits(reference, ids))  # FP8 rounding shows
    with fp8_disabled(model) as swapped:
        assert swapped == converted and float8_names(model) == []
        assert type(model.lm_head) is nn.Linear and model.lm_head.weight is head_weight  # shared, not copied
        assert torch.equal(logits(model, ids), logits(reference, ids))  # the same bf16 matmuls
    assert float8_names(model) == converted
    assert torch.equal(logits(model, ids), fp8_logits)
    with fp8_disabled(reference) as swapped:  # nothing to swap: a no-op
        assert swapped == []


def test_validation_callback_evaluates_an_fp8_model_in_bf16():
    reference = tiny_gen2()
    model = copy.deepcopy(reference)
    enable_fp8(model)
    generator = torch.Generator().manual_seed(1)
    rows = [
        {"input_ids": row[:-1], "shift_labels": row[1:]} for row in torch.randint(0, 256, (4, 33), generator=generator)
    ]
    token_bytes = torch.ones(256, dtype=torch.int64)
    callback = ValBpbCallback(rows, token_bytes, eval_every=1, eval_tokens=128, batch_size=2)

    class Args:
        per_device_eval_batch_size = None
        per_device_train_batch_size = 2
        bf16, fp16 = True, False

    bf16 = evaluate_bpb(reference, rows, token_bytes, 128, 2, torch.bfloat16)
    assert callback.evaluate(model, Args()) == bf16
    assert evaluate_bpb(model, rows, token_bytes, 128, 2, torch.bfloat16) != bf16  # in FP8 it would differ


def train_losses(model, ids, steps, device, compile_model=False) -> list[float]:
    optimizer = build_gen2_training(model, {"num_iterations": 100, "warmup_steps": 0}).optimizer
    forward = torch.compile(model) if compile_model else model
    losses = []
    for _ in range(steps):
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = forward(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_fp8_training_on_the_cpu_follows_bf16():
    """torchao's kernels run on the CPU here: a few steps in FP8 stay within 1 % of bf16."""
    ids = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(2))
    bf16 = train_losses(tiny_gen2(), ids, 4, "cpu")
    model = tiny_gen2()
    enable_fp8(model)
    fp8 = train_losses(model, ids, 4, "cpu")
    assert all(math.isfinite(loss) for loss in fp8)
    assert fp8[-1] < fp8[0]
    assert fp8 == pytest.approx(bf16, rel=0.01)


@pytest.mark.gpu
def test_fp8_training_on_an_fp8_gpu_follows_bf16():
    """On compute capability >= 8.9: compiled FP8 steps of a tiny generation-2 model, finite and near bf16."""
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("no FP8 tensor cores on this GPU")
    pytest.importorskip("torchao")
    ids = torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(2)).cuda()
    bf16 = train_losses(tiny_gen2().cuda(), ids, 8, "cuda", compile_model=True)
    model = tiny_gen2().cuda()
    enable_fp8(model)
    fp8 = train_losses(model, ids, 8, "cuda", compile_model=True)
    assert all(math.isfinite(loss) for loss in fp8) and fp8[-1] < fp8[0]
    assert fp8 == pytest.approx(bf16, rel=0.05)
    with fp8_disabled(model):
        assert float8_names(model) == []
