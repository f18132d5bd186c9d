"""The offloading engine's CPU side (nanochat_hf.optim.host_sum and `flush_every`): exact fp32 sums of bf16
gradients, fewer flushes with the same result, and the cost formula the planner will use."""

import copy

import pytest
import torch
from test_memory_engine import accumulate, batches, max_difference, tiny_model

from nanochat_hf.errors import UserInputError
from nanochat_hf.optim import build_optimizer
from nanochat_hf.optim.host_sum import SUM_SLICE_ELEMENTS, accumulate_into, measure_host_bandwidth
from nanochat_hf.optim.offload import OffloadedMuonAdamW
from nanochat_hf.planning.host_sum_time import HOST_SUM_BYTES_PER_PARAM, choose_flush_every, host_sum_seconds


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.mark.parametrize("numel", [1, 1000, SUM_SLICE_ELEMENTS + 12345])
def test_sliced_bf16_sum_is_bit_identical_to_add(numel):
    generator = torch.Generator().manual_seed(numel)
    grad_sum = torch.randn(numel, generator=generator)
    grad = (torch.randn(numel, generator=generator) * 1e-3).to(torch.bfloat16)
    expected = grad_sum.clone().add_(grad)
    accumulate_into(grad_sum, grad)
    assert torch.equal(grad_sum, expected)
    matrix_sum, matrix = torch.zeros(7, 9), torch.randn(7, 9).to(torch.bfloat16)
    accumulate_into(matrix_sum, matrix.t().contiguous().t())  # a non-contiguous view takes torch's own add
    assert torch.equal(matrix_sum, matrix.float())


def test_flushing_once_per_step_equals_the_in_memory_optimizer():
    """With flush_every >= the micro-steps, the device sums every micro-step as autograd does in `full` mode
    and the host adds that sum to zero: bit-identical to NanoChatMuonAdamW."""
    reference = tiny_model()
    offloaded = copy.deepcopy(reference)
    optimizer = build_optimizer(reference)
    engine = OffloadedMuonAdamW(offloaded, device="cpu", weights_dtype=torch.float32, flush_every=4, max_grad_norm=1.0)
    for step in range(3):
        micro_batches = batches(step, count=3)
        accumulate(reference, micro_batches)
        accumulate(offloaded, micro_batches)
        assert all(p.grad is not None for p in offloaded.parameters())  # held on the "device"
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        optimizer.step()
        reference.zero_grad(set_to_none=True)
        engine.step()
        assert all(p.grad is None for p in offloaded.parameters())  # streamed before the step
        assert max_difference(reference, offloaded) == 0.0, step


def test_flushing_every_second_micro_step_sums_the_same_gradients():
    model = tiny_model()
    every, second = copy.deepcopy(model), copy.deepcopy(model)
    engines = [
        OffloadedMuonAdamW(m, device="cpu", weights_dtype=torch.float32, flush_every=k)
        for m, k in ((every, 1), (second, 2))
    ]
    micro_batches = batches(5, count=5)
    accumulate(every, micro_batches)
    accumulate(second, micro_batches)
    for engine in engines:
        engine.finish_accumulation()
    one, two = (engine.master_weights() for engine in engines)
    for name in one:  # fp32 sums grouped (g1 + g2) + (g3 + g4) + g5 instead of one at a time: rounding only
        torch.testing.assert_close(two[name].grad, one[name].grad, rtol=1e-5, atol=1e-7)
        assert one[name].grad.abs().sum() > 0
    engines[1].zero_grad()  # drops what is still held on the device too
    assert all(p.grad is None for p in second.parameters())
    assert all(torch.count_nonzero(master.grad) == 0 for master in two.values())
    with pytest.raises(UserInputError, match="flush_every"):
        OffloadedMuonAdamW(tiny_model(), device="cpu", flush_every=0)


def test_cost_formula_counts_flushes_and_bytes():
    bandwidth = 20e9
    per_flush = 1_879_048_192 * HOST_SUM_BYTES_PER_PARAM / bandwidth  # d32: ~0.94 s per flush at 20 GB/s
    assert host_sum_seconds(1_879_048_192, 256, bandwidth) == pytest.approx(256 * per_flush)
    assert host_sum_seconds(1_879_048_192, 256, bandwidth, flush_every=8) == pytest.approx(32 * per_flush)
    assert host_sum_seconds(1_879_048_192, 10, bandwidth, flush_every=4) == pytest.approx(3 * per_flush)
    with pytest.raises(ValueError, match="flush_every"):
        host_sum_seconds(1, 1, bandwidth, flush_every=0)
    measured = measure_host_bandwidth(num_elements=1 << 20, repeats=1)
    assert 1e8 < measured < 1e13  # bytes per second, some physical value


def test_the_planner_flushes_every_micro_step_when_that_hides_under_backward():
    d32, bandwidth = 1_879_048_192, 20e9  # ~0.94 s per flush
    assert choose_flush_every(d32, 256, bandwidth, backward_seconds=2.0, spare_gpu_bytes=0) == (1, 0.0)
    # A slow host: 0.94 s per flush against 0.3 s of backward. With room for bf16 gradients on the GPU, 4
    # micro-steps per flush hide it; without, every flush shows 0.64 s.
    every, exposed = choose_flush_every(d32, 256, bandwidth, backward_seconds=0.3, spare_gpu_bytes=4 * 2**30)
    assert every == 4 and exposed == 0.0
    every, exposed = choose_flush_every(d32, 256, bandwidth, backward_seconds=0.3, spare_gpu_bytes=2**30)
    assert every == 1 and exposed == pytest.approx(256 * (d32 * 10 / bandwidth - 0.3))
