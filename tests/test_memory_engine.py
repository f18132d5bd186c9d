"""The offloading engine of the 12gb / 8gb modes (`OffloadedMuonAdamW`), on the CPU.

`device="cpu"` runs the same code as on a GPU without pinned memory or CUDA streams: gradients are streamed
by the post-accumulate-grad hooks into fp32 sums, clipped there, and the step updates fp32 masters and
writes the device weights back. The reference is nanochat's in-memory optimizer (`NanoChatMuonAdamW`).
"""

import copy
import dataclasses
import io

import pytest
import torch
from helpers import randomize_

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.optim import build_optimizer
from nanochat_hf.optim.offload import MASTER_WEIGHT_KEY, OffloadedMuonAdamW
from nanochat_hf.planning.flops import ModelShape
from nanochat_hf.planning.memory import static_memory
from nanochat_hf.planning.memory_modes import MEMORY_MODES


CONFIG = dict(n_layer=3, n_embd=64, n_head=4, n_kv_head=2, vocab_size=256, sequence_len=16)


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def tiny_model(seed=0, scale=0.2, **overrides):
    torch.manual_seed(seed)
    return randomize_(NanoChatHFForCausalLM(NanoChatHFConfig(**{**CONFIG, **overrides})), seed=seed, scale=scale)


def batches(seed, count=3, rows=2):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, CONFIG["vocab_size"], (rows, CONFIG["sequence_len"]), generator=generator)
        for _ in range(count)
    ]


def accumulate(model, micro_batches):
    for ids in micro_batches:
        (model(ids, labels=ids).loss / len(micro_batches)).backward()


def max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("bucket_layers", [1, 2, 5])
def test_fp32_engine_step_equals_nanochat_optimizer(bucket_layers):
    """fp32 device weights: streaming, fp32 sums, clipping and the CPU/"device" split change nothing."""
    reference = tiny_model()
    offloaded = copy.deepcopy(reference)
    optimizer = build_optimizer(reference)
    engine = OffloadedMuonAdamW(
        offloaded, device="cpu", weights_dtype=torch.float32, grad_bucket_layers=bucket_layers, max_grad_norm=1.0
    )
    for step in range(4):
        micro_batches = batches(step)
        accumulate(reference, micro_batches)
        accumulate(offloaded, micro_batches)
        # The engine took every gradient off the parameters during backward.
        assert all(p.grad is None for p in offloaded.parameters())
        norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        assert norm > 1.0  # clipping really happens in this test
        torch.testing.assert_close(engine.grad_norm(), norm, rtol=1e-6, atol=0)
        optimizer.step()
        reference.zero_grad(set_to_none=True)
        engine.step()
        assert max_difference(reference, offloaded) == 0.0, step
    for name, master in engine.master_weights().items():
        assert torch.equal(master, reference.get_parameter(name)), name


def test_gradient_sums_are_fp32_and_exact():
    model = tiny_model().to(torch.bfloat16)
    twin = copy.deepcopy(model)
    engine = OffloadedMuonAdamW(model, device="cpu")
    micro_batches = batches(7, count=4)
    accumulate(model, micro_batches)
    engine.finish_accumulation()
    expected = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in twin.named_parameters()}
    for ids in micro_batches:  # the same bf16 gradients, one micro-step at a time, summed in fp32
        twin.zero_grad(set_to_none=True)
        (twin(ids, labels=ids).loss / len(micro_batches)).backward()
        for name, p in twin.named_parameters():
            expected[name] += p.grad.float()
    for name, master in engine.master_weights().items():
        assert master.grad.dtype == torch.float32
        assert torch.equal(master.grad, expected[name]), name


def test_bf16_weights_keep_small_updates_in_the_fp32_master():
    """The second quality rule: an update below half a bf16 ulp vanishes from plain bf16 weights."""

    def weights_of_magnitude_half_to_one(model):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.sign(p) * (0.5 + 0.49 * torch.rand(p.shape, generator=torch.Generator().manual_seed(1))))
        return model

    settings = dict(matrix_lr=1e-4, embedding_lr=1e-4, unembedding_lr=1e-4, model_dim=768)  # steps of <= ~1e-4
    base = weights_of_magnitude_half_to_one(tiny_model(n_layer=1))
    plain = copy.deepcopy(base).to(torch.bfloat16)  # bf16 weights updated in place, no master
    plain_optimizer = build_optimizer(plain, **settings)
    offloaded = copy.deepcopy(base)
    engine = OffloadedMuonAdamW(offloaded, device="cpu", **settings)
    start_plain = copy.deepcopy(plain)
    start_master = {name: m.clone() for name, m in engine.master_weights().items()}
    ids = batches(3, count=1)
    for _ in range(30):
        accumulate(plain, ids)
        plain_optimizer.step()
        plain.zero_grad(set_to_none=True)
        accumulate(offloaded, ids)
        engine.step()

    # Each update is < half an ulp of a weight in [0.5, 1): bf16 weights round every one of them away.
    assert max_difference(plain, start_plain) == 0.0
    moved = changed = total = 0
    for name, master in engine.master_weights().items():
        weight = offloaded.get_parameter(name)
        assert weight.dtype == torch.bfloat16 and torch.equal(weight, master.to(torch.bfloat16)), name
        if name == "transformer.wte.weight":
            continue  # rows of tokens not in the batch get no gradient at all
        moved += (master != start_master[name]).sum().item()
        changed += (weight != start_master[name].to(torch.bfloat16)).sum().item()
        total += master.numel()
    assert moved > 0.99 * total  # the master kept every small update
    assert changed > 0.05 * total  # and their sum has by now moved many bf16 weights


def test_engine_tensors_match_the_planner_to_the_byte():
    """The 12gb mode as planned (memory_modes.py) is what the engine builds: bf16 device weights, fp32
    masters and sums, staging buffers for the gradient bucket, optimizer state after a step."""
    knobs = MEMORY_MODES["12gb"]
    config = NanoChatHFConfig(**CONFIG)
    model = NanoChatHFForCausalLM(config)
    engine = OffloadedMuonAdamW(model, device="cpu", grad_bucket_layers=knobs.grad_bucket_layers)
    accumulate(model, batches(0, count=1))
    engine.step()

    def nbytes(tensors):
        return sum(t.numel() * t.element_size() for t in tensors)

    masters = list(engine.master_weights().values())
    state = [
        value
        for master in masters
        for key, value in engine.state[master].items()
        if torch.is_tensor(value) and key != MASTER_WEIGHT_KEY
    ]
    measured = dict(
        gpu_weights=nbytes(model.parameters()),
        cpu_master_weights=nbytes(masters),
        cpu_gradients=nbytes(m.grad for m in masters),
        cpu_optimizer_state=nbytes(state),
        cpu_pinned_staging=nbytes(slot.buffer for slot in engine._slots),
    )
    predicted = dataclasses.asdict(static_memory(ModelShape.from_config(config), knobs))
    assert measured == {key: predicted[key] for key in measured}
    assert predicted["gpu_optimizer_state"] == 0 and predicted["gpu_weight_cast_copies"] == 0


def test_clipping_happens_once_per_step():
    """The Trainer clips through `clip_grad_norm_`; the step must then not clip again at its own norm."""
    reference = tiny_model()
    offloaded = copy.deepcopy(reference)
    optimizer = build_optimizer(reference)
    engine = OffloadedMuonAdamW(offloaded, device="cpu", weights_dtype=torch.float32, max_grad_norm=0.1)
    micro_batches = batches(11)
    accumulate(reference, micro_batches)
    accumulate(offloaded, micro_batches)
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
    optimizer.step()
    engine.clip_grad_norm_(1.0)
    engine.step()  # would clip to 0.1 if it clipped a second time
    assert max_difference(reference, offloaded) == 0.0


def test_state_dict_carries_the_masters_and_resumes_exactly():
    first = tiny_model()
    engine = OffloadedMuonAdamW(first, device="cpu")
    for step in range(2):
        accumulate(first, batches(step))
        engine.step()
    buffer = io.BytesIO()
    torch.save(engine.state_dict(), buffer)  # as the Trainer writes optimizer.pt ...
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # ... and reads it back

    second = tiny_model(seed=5)  # different weights: everything must come from the checkpoint
    resumed = OffloadedMuonAdamW(second, device="cpu")
    resumed.load_state_dict(saved)
    for name, master in engine.master_weights().items():
        assert torch.equal(resumed.master_weights()[name], master), name
    assert max_difference(first, second) == 0.0  # bf16 device weights rewritten from the masters
    accumulate(first, batches(9))
    engine.step()
    accumulate(second, batches(9))
    resumed.step()
    assert max_difference(first, second) == 0.0


def test_parameters_without_a_gradient_are_left_alone():
    model = tiny_model()
    model.lm_head.weight.requires_grad_(False)  # frozen: no route into the optimizer at all
    engine = OffloadedMuonAdamW(model, device="cpu")
    assert "lm_head.weight" not in engine.master_weights()
    # A trained parameter that gets no gradient in a step keeps its value and its (empty) state.
    wte = engine.master_weights()["transformer.wte.weight"].clone()
    ids = batches(0, count=1)[0]
    model.transformer.wte.weight.requires_grad_(False)
    model(ids, labels=ids).loss.backward()
    engine.step()
    assert torch.equal(engine.master_weights()["transformer.wte.weight"], wte)
    assert MASTER_WEIGHT_KEY not in engine.state[engine.master_weights()["transformer.wte.weight"]]
