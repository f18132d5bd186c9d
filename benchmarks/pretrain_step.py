"""Full pretraining steps (forward, backward, nanochat's Muon + AdamW step) at a given shape.

    python benchmarks/pretrain_step.py                       # a small shape: about a minute on 2 CPU cores
    python benchmarks/pretrain_step.py --depth 4 --vocab-size 65536 --micro-batch 4 --seq-len 512 --variants all
    python benchmarks/pretrain_step.py --depth 20 --vocab-size 65536 --micro-batch 8 --seq-len 2048 --dtype bfloat16

Runs variants in the same process - plain, gradient checkpointing, torch.compile, both - and prints
tokens/s and peak memory of each, with ratios against the plain run. By default the two without
torch.compile on a CPU (compiling takes minutes there) and all four on a GPU; `--variants` picks (`all`).
"""

import argparse
import time

import torch
from measure import PeakMemory

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.optim import build_optimizer


VARIANTS = {
    "plain": dict(checkpointing=False, compile=False),
    "checkpointing": dict(checkpointing=True, compile=False),
    "compile": dict(checkpointing=False, compile=True),
    "checkpointing+compile": dict(checkpointing=True, compile=True),
}


def build(config, device, dtype, checkpointing: bool, compile: bool):
    torch.manual_seed(0)
    model = NanoChatHFForCausalLM(config).to(device)
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    model.train()
    optimizer = build_optimizer(model)
    forward = torch.compile(model) if compile else model
    return model, forward, optimizer


def optimizer_step(forward, optimizer, batches, device, dtype):
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    for input_ids in batches:
        with autocast:
            loss = forward(input_ids, labels=input_ids).loss / len(batches)
        loss.backward()
    torch.nn.utils.clip_grad_norm_(forward.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=8192, help="nanochat's is 65536")
    parser.add_argument("--seq-len", type=int, default=256, help="nanochat's is 2048")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per variant")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="autocast dtype")
    parser.add_argument("--variants", nargs="+", choices=[*VARIANTS, "all"], help="default: see above")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.variants is None:
        args.variants = list(VARIANTS) if args.device.startswith("cuda") else ["plain", "checkpointing"]
    elif "all" in args.variants:
        args.variants = list(VARIANTS)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = NanoChatHFConfig.from_depth(args.depth, vocab_size=args.vocab_size, sequence_len=args.seq_len)
    batches = [
        torch.randint(0, config.vocab_size, (args.micro_batch, args.seq_len), device=device)
        for _ in range(args.grad_accum)
    ]
    tokens_per_step = args.micro_batch * args.seq_len * args.grad_accum
    print(
        f"depth {args.depth} (width {config.n_embd}), micro-batch {args.micro_batch} x {args.seq_len}, "
        f"accumulation {args.grad_accum} ({tokens_per_step:,} tokens/step), {args.dtype} on {device}"
    )
    results = {}
    for name in args.variants:
        print(f"  {name}: warm-up{' and compilation' if VARIANTS[name]['compile'] else ''} ...", flush=True)
        model, forward, optimizer = build(config, device, dtype, **VARIANTS[name])
        optimizer_step(forward, optimizer, batches, device, dtype)  # warm-up (and compilation)
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            for _ in range(args.steps):
                optimizer_step(forward, optimizer, batches, device, dtype)
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
        results[name] = (tokens_per_step * args.steps / elapsed, memory.peak_bytes)
        print(f"  {name}: {args.steps} steps in {elapsed:.1f} s", flush=True)
        del model, forward, optimizer
    base_tps, base_mem = results.get("plain", next(iter(results.values())))
    for name, (tps, peak) in results.items():
        print(
            f"  {name:<22} {tps:>10,.0f} tokens/s ({tps / base_tps:.2f}x)   "
            f"peak memory {peak / 2**20:>9,.1f} MiB ({peak / max(base_mem, 1):.2f}x)"
        )


if __name__ == "__main__":
    main()
