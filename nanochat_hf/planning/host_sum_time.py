"""The offloading modes' CPU time: summing streamed gradients into fp32 in host RAM, and how often.

Every flush sums each parameter's gradient into its fp32 host sum: it reads the staged bf16 gradient
(2 bytes) and reads and writes the fp32 sum (8 bytes), so it moves 10 bytes per parameter through host
memory (the fp32 scratch slice of `nanochat_hf.optim.host_sum.accumulate_into` stays in cache). The
engine sums on a CPU thread while backward runs on the GPU, so a flush costs nothing as long as it
takes no longer than the backward it overlaps. `flush_every = k` lets the device accumulate k
micro-steps in place first (in bf16, which needs one bf16 gradient per parameter in GPU memory) and
sums once per k micro-steps.

`measure_host_bandwidth()` in `nanochat_hf.optim.host_sum` measures the bandwidth to use here; this
module is torch-free so the planner can import it.
"""

import math


# Bytes of memory traffic per parameter and flush: bf16 gradient read (2) + fp32 sum read and written (8).
HOST_SUM_BYTES_PER_PARAM = 10
DEVICE_GRADIENT_BYTES_PER_PARAM = 2  # bf16 gradients held on the device between flushes


def host_sum_seconds(num_params: int, micro_steps: int, bandwidth_bytes_per_s: float, flush_every: int = 1) -> float:
    """CPU seconds per optimizer step spent summing gradients: ceil(micro_steps / k) flushes of 10 B/param."""
    if flush_every < 1 or micro_steps < 1:
        raise ValueError(f"flush_every and micro_steps must be >= 1, got {flush_every} and {micro_steps}")
    if bandwidth_bytes_per_s <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth_bytes_per_s}")
    return math.ceil(micro_steps / flush_every) * num_params * HOST_SUM_BYTES_PER_PARAM / bandwidth_bytes_per_s


def choose_flush_every(
    num_params: int,
    micro_steps: int,
    bandwidth_bytes_per_s: float,
    backward_seconds: float,
    spare_gpu_bytes: int,
) -> tuple[int, float]:
    """The flush schedule with the least exposed CPU time: (flush_every, exposed seconds per optimizer step).

    A flush overlaps the backward pass(es) it follows, so what shows is max(0, flush - k x backward)
    per flush. Flushing every micro-step (exact fp32 accumulation, no extra GPU memory) is kept when it
    hides; otherwise the smallest k that hides it, if the device has room for a bf16 gradient per
    parameter, else the largest k up to `micro_steps` (the fewest flushes) that is still affordable.
    """
    per_flush = num_params * HOST_SUM_BYTES_PER_PARAM / bandwidth_bytes_per_s

    def exposed(k: int) -> float:
        return math.ceil(micro_steps / k) * max(0.0, per_flush - k * backward_seconds)

    if exposed(1) == 0.0 or spare_gpu_bytes < num_params * DEVICE_GRADIENT_BYTES_PER_PARAM:
        return 1, exposed(1)
    k = min(micro_steps, max(1, math.ceil(per_flush / backward_seconds))) if backward_seconds > 0 else micro_steps
    return k, exposed(k)
