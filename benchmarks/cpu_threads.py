"""A CPU micro-step of the quickstart's model with 1 torch thread against all cores, alternating in one process.

    python benchmarks/cpu_threads.py
    python benchmarks/cpu_threads.py --rounds 5 --depth 4 --micro-batch 8 --seq-len 256

What `nanochat_hf.cpu_threads` decides from: on an idle machine more threads are faster; when other
programs keep the cores busy, torch's threads wait on each other and one thread is faster. Prints the
median wall seconds per forward+backward for each thread count, their ratio, the CPU use of the machine
sampled before the run, and the thread count `choose_cpu_threads` picks now.
"""

import argparse
import statistics
import time

import torch

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.cpu_threads import available_cores, busy_cores, choose_cpu_threads


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    busy = busy_cores()
    chosen, why = choose_cpu_threads()
    config = NanoChatHFConfig.from_depth(args.depth, vocab_size=args.vocab_size, sequence_len=args.seq_len)
    torch.manual_seed(0)
    model = NanoChatHFForCausalLM(config).train()
    ids = torch.randint(0, config.vocab_size, (args.micro_batch, args.seq_len))

    def micro_step():
        model(ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    counts = sorted({1, available_cores()})
    micro_step()  # warm-up
    seconds = {count: [] for count in counts}
    for round_number in range(1, args.rounds + 1):
        for count in counts:
            torch.set_num_threads(count)
            start = time.perf_counter()
            micro_step()
            seconds[count].append(time.perf_counter() - start)
            print(f"  round {round_number}/{args.rounds}: {count} thread(s) {seconds[count][-1]:.2f} s", flush=True)
    print(
        f"depth {args.depth}, micro-batch {args.micro_batch} x {args.seq_len}, {available_cores()} cores, "
        f"{busy:.1f} busy with other work before the run"
    )
    base = statistics.median(seconds[1])
    for count in counts:
        median = statistics.median(seconds[count])
        print(f"  {count} thread(s): {median:.2f} s per micro-step ({base / median:.2f}x the speed of 1 thread)")
    print(f"choose_cpu_threads now: {chosen} ({why})")


if __name__ == "__main__":
    main()
