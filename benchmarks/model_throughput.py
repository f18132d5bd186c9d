"""Forward+backward throughput of our model against transformers' built-in NanoChat, same shape, same process.

    python benchmarks/model_throughput.py                    # a small shape: about a minute on 2 CPU cores
    python benchmarks/model_throughput.py --depth 4 --vocab-size 65536 --seq-len 512 --batch-size 4   # ~20 min on CPU
    python benchmarks/model_throughput.py --depth 20 --vocab-size 65536 --seq-len 2048 --dtype bfloat16  # a GPU

Both models get identical weights; the runs alternate (ours, built-in, ours, ...) so that machine noise
hits both alike. Prints tokens/s and peak memory for each and the ratio ours / built-in (higher is better
for tokens/s). Peak memory is `torch.cuda.max_memory_allocated` on CUDA, and on CPU the peak resident set
size above the baseline, sampled every millisecond (an approximation: the CPU allocator gives no exact peak).
"""

import argparse
import time

import torch
from measure import PeakMemory
from transformers import NanoChatForCausalLM as NativeForCausalLM

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.conversion import config_to_native, state_dict_to_native


def train_step(model, input_ids):
    loss = model(input_ids, labels=input_ids).loss
    loss.backward()
    model.zero_grad(set_to_none=True)


def measure(model, input_ids, steps: int, device) -> tuple[float, int]:
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        for _ in range(steps):
            train_step(model, input_ids)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return input_ids.numel() * steps / elapsed, memory.peak_bytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=8192, help="nanochat's is 65536")
    parser.add_argument("--seq-len", type=int, default=256, help="nanochat's is 2048")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best round counts")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = NanoChatHFConfig.from_depth(args.depth, vocab_size=args.vocab_size, sequence_len=args.seq_len)
    torch.manual_seed(0)
    ours = NanoChatHFForCausalLM(config)
    with torch.no_grad():  # nanochat zero-inits the head and projections; random weights exercise everything
        for p in ours.parameters():
            p.normal_(0, 0.02)
    builtin = NativeForCausalLM(config_to_native(config, warn=False))
    builtin.load_state_dict(state_dict_to_native(ours.state_dict()))
    models = {
        "nanochat-hf": ours.to(device, dtype).train(),
        "transformers built-in": builtin.to(device, dtype).train(),
    }
    input_ids = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len), device=device)

    print(
        f"depth {args.depth} (width {config.n_embd}, {ours.num_parameters() / 1e6:.1f}M params), "
        f"batch {args.batch_size} x {args.seq_len}, {args.dtype} on {device}"
    )
    for model in models.values():  # warm-up
        train_step(model, input_ids)
    best = {name: (0.0, 0) for name in models}
    for round_number in range(1, args.rounds + 1):
        for name, model in models.items():
            tokens_per_s, peak = measure(model, input_ids, args.steps, device)
            best[name] = (max(best[name][0], tokens_per_s), max(best[name][1], peak))
            print(f"  round {round_number}/{args.rounds}: {name:<22} {tokens_per_s:>10,.0f} tokens/s", flush=True)
    print("best round:")
    for name, (tokens_per_s, peak) in best.items():
        print(f"  {name:<22} {tokens_per_s:>10,.0f} tokens/s   peak memory {peak / 2**20:>8,.1f} MiB")
    (ours_tps, ours_mem), (ref_tps, ref_mem) = best["nanochat-hf"], best["transformers built-in"]
    print(
        f"  ratio ours / built-in: throughput {ours_tps / ref_tps:.3f}x, peak memory {ours_mem / max(ref_mem, 1):.3f}x"
    )


if __name__ == "__main__":
    main()
