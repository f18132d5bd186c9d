"""The CPU side of the offloading engine: summing streamed gradients into fp32, and what that costs.

Summing. PyTorch's `fp32_sum.add_(bf16_grad)` has to promote every element on the fly, and on the CPU that
mixed-dtype loop is not vectorised: measured on the 2-core CPU sandbox it runs at about a third of the
speed of an fp32 + fp32 `add_` (`benchmarks/host_grad_sum.py`). `accumulate_into` instead converts the
gradient a slice at a time into an fp32 scratch buffer (bf16 -> fp32 is exact, and the conversion is a
vectorised copy) and adds that slice with the fp32 kernel: the same sum bit for bit, 1.7-3x faster than
the mixed-dtype `add_` in the benchmark's runs there. Slices are 2**20 elements (4 MiB of scratch, cache-sized), large enough for torch's intra-op
threads to split each operation over all cores.

Cost model: `nanochat_hf.planning.host_sum_time` (10 bytes per parameter and flush; fewer flushes with
`flush_every`), fed by `measure_host_bandwidth()`, which measures exactly this operation on this host.
"""

import math
import threading
import time

import torch

from nanochat_hf.planning.host_sum_time import HOST_SUM_BYTES_PER_PARAM


SUM_SLICE_ELEMENTS = 1 << 20

_scratch = threading.local()


def _scratch_buffer(numel: int) -> torch.Tensor:
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.numel() < numel:
        buffer = _scratch.buffer = torch.empty(numel, dtype=torch.float32)
    return buffer


def accumulate_into(grad_sum: torch.Tensor, grad: torch.Tensor) -> None:
    """`grad_sum += grad` in fp32 on the CPU, bit-identical to `grad_sum.add_(grad)`, fast for bf16 `grad`."""
    if grad.dtype == grad_sum.dtype or not (grad_sum.is_contiguous() and grad.is_contiguous()):
        grad_sum.add_(grad)
        return
    total = grad.numel()
    flat_sum, flat_grad = grad_sum.view(-1), grad.view(-1)
    scratch = _scratch_buffer(min(total, SUM_SLICE_ELEMENTS))
    for start in range(0, total, SUM_SLICE_ELEMENTS):
        stop = min(total, start + SUM_SLICE_ELEMENTS)
        piece = scratch[: stop - start]
        piece.copy_(flat_grad[start:stop])  # bf16 -> fp32: exact
        flat_sum[start:stop].add_(piece)


def measure_host_bandwidth(num_elements: int = 1 << 26, repeats: int = 3) -> float:
    """Bytes per second of `accumulate_into` (fp32 sum += bf16 gradient) on this host, best of `repeats`.

    Uses 64 Mi elements by default (384 MiB), far beyond any cache, so the figure is memory bandwidth as
    the summing sees it, with torch's current intra-op thread count.
    """
    grad_sum = torch.zeros(num_elements, dtype=torch.float32)
    grad = torch.ones(num_elements, dtype=torch.bfloat16)
    accumulate_into(grad_sum, grad)  # first touch of the pages
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        accumulate_into(grad_sum, grad)
        best = min(best, time.perf_counter() - start)
    return num_elements * HOST_SUM_BYTES_PER_PARAM / best
