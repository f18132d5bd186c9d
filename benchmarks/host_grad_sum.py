"""The 12gb mode's CPU side: summing a micro-step's bf16 gradients into the fp32 host sums.

    python benchmarks/host_grad_sum.py                  # d12's parameter shapes (~185 M), about a minute
    python benchmarks/host_grad_sum.py --depth 32       # d32 (1.88 B parameters: ~11 GiB of RAM)

For every parameter of a nanochat model of `--depth` (shapes only, no model is built) it times, in
alternating rounds, the work of one flush:

- bare add_: `fp32_sum.add_(bf16_grad)` on each tensor, what the engine ran before (PyTorch's
  mixed-dtype loop);
- engine: the offloading engine's own summing function on its adder thread (`offload._accumulate`,
  i.e. `host_sum.accumulate_into`: bf16 -> fp32 slices, then an fp32 add; bit-identical sums);
- fp32 add_: `fp32_sum.add_(fp32_grad)`, the vectorised kernel the engine reaches (it moves 12 bytes
  per parameter instead of 10), as a ceiling.

Then prints seconds per flush, GB/s (10 bytes per parameter), ratio to the bare add_, the per-micro-step
cost with `flush_every` = 1, 4, 16, and the planner's prediction from `measure_host_bandwidth()`.
"""

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.optim.host_sum import measure_host_bandwidth
from nanochat_hf.optim.offload import _accumulate
from nanochat_hf.planning.host_sum_time import HOST_SUM_BYTES_PER_PARAM, host_sum_seconds


def parameter_shapes(depth: int, vocab_size: int) -> list[torch.Size]:
    with torch.device("meta"):
        model = NanoChatHFForCausalLM(NanoChatHFConfig.from_depth(depth, vocab_size=vocab_size))
    return [p.shape for p in model.parameters()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--vocab-size", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--micro-steps", type=int, default=256, help="micro-steps per optimizer step (d32: 256)")
    args = parser.parse_args(argv)

    shapes = parameter_shapes(args.depth, args.vocab_size)
    params = sum(s.numel() for s in shapes)
    print(
        f"d{args.depth}: {params / 1e6:,.0f} M parameters in {len(shapes)} tensors; "
        f"{torch.get_num_threads()} torch threads",
        flush=True,
    )
    generator = torch.Generator().manual_seed(0)
    sums = [torch.zeros(s) for s in shapes]
    grads = [(torch.randn(s, generator=generator) * 1e-3).to(torch.bfloat16) for s in shapes]
    adder = ThreadPoolExecutor(1, thread_name_prefix="grad-sum")  # as the engine's

    def bare():
        for grad_sum, grad in zip(sums, grads, strict=True):
            grad_sum.add_(grad)

    def engine():
        futures = [adder.submit(_accumulate, s, g, None) for s, g in zip(sums, grads, strict=True)]
        for future in futures:
            future.result()

    grads32 = None

    def fp32():
        for grad_sum, grad in zip(sums, grads32, strict=True):
            grad_sum.add_(grad)

    variants = {"bare add_": bare, "engine": engine}
    for run in variants.values():  # first touch of the pages
        run()
    times = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
        print(f"  round {repeat + 1}/{args.repeats}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()))
    check = [s.clone() for s in sums[:3]]
    engine()
    bare_check = [c.add_(g) for c, g in zip(check, grads[:3], strict=True)]
    assert all(torch.equal(a, b) for a, b in zip(bare_check, sums[:3], strict=True)), "engine sums differ"
    grads32 = []
    while grads:  # convert one tensor at a time: no second full copy of the gradients in RAM
        grads32.append(grads.pop(0).float())
    times["fp32 add_"] = []
    fp32()
    for _ in range(args.repeats):
        start = time.perf_counter()
        fp32()
        times["fp32 add_"].append(time.perf_counter() - start)

    bandwidth = measure_host_bandwidth()
    base = statistics.median(times["bare add_"])
    print(f"\n{'variant':<12} {'s/flush':>8} {'GB/s':>6} {'vs bare':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:<12} {median:>8.3f} {params * HOST_SUM_BYTES_PER_PARAM / median / 1e9:>6.1f} {base / median:>8.2f}"
        )
    engine_seconds = statistics.median(times["engine"])
    print(f"\nper optimizer step of {args.micro_steps} micro-steps (engine, measured per flush):")
    for every in (1, 4, 16):
        flushes = -(-args.micro_steps // every)
        predicted = host_sum_seconds(params, args.micro_steps, bandwidth, flush_every=every)
        print(
            f"  flush_every {every:>2}: {flushes * engine_seconds:8.1f} s measured, {predicted:8.1f} s predicted "
            f"from measure_host_bandwidth() = {bandwidth / 1e9:.1f} GB/s"
        )


if __name__ == "__main__":
    main()
