"""Forward+backward throughput of our model against a reference, same shape, same process.

    python benchmarks/model_throughput.py                    # a small shape: about a minute on 2 CPU cores
    python benchmarks/model_throughput.py --generation 2     # the same for generation 2
    python benchmarks/model_throughput.py --depth 4 --vocab-size 65536 --seq-len 512 --batch-size 4   # ~20 min on CPU
    python benchmarks/model_throughput.py --depth 20 --vocab-size 65536 --seq-len 2048 --dtype bfloat16  # a GPU

Generation 1 is compared with transformers' built-in NanoChat; generation 2 (value embeddings, SSSL windows,
lambdas, smear, backout, 32,768-token vocabulary) with nanochat's own `GPT` from its source (the local mirror,
or `--nanochat-src` pointing at a checkout), which computes the same function.

Both models get identical weights; the runs alternate (ours, built-in, ours, ...) so that machine noise
hits both alike. Prints tokens/s and peak memory for each and the ratio ours / built-in (higher is better
for tokens/s). Peak memory is `torch.cuda.max_memory_allocated` on CUDA, and on CPU the peak resident set
size above the baseline, sampled every millisecond (an approximation: the CPU allocator gives no exact peak).
"""

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from measure import PeakMemory
from transformers import NanoChatForCausalLM as NativeForCausalLM

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.conversion import config_to_native, state_dict_to_native


NANOCHAT_MIRROR = Path("/work/.mirror/karpathy+nanochat/repo")
NANOCHAT_FILES = ("__init__.py", "common.py", "optim.py", "flash_attention.py", "gpt.py")


def import_nanochat_gpt(source: str | None):
    """nanochat's `nanochat.gpt`, from a checkout (`source`) or written out of the bare mirror with `git show`."""
    if source is None:
        root = Path(tempfile.mkdtemp(prefix="nanochat-src-"))
        (root / "nanochat").mkdir()
        for name in NANOCHAT_FILES:
            text = subprocess.run(
                ["git", "-C", str(NANOCHAT_MIRROR), "show", f"HEAD:nanochat/{name}"], capture_output=True, check=True
            ).stdout
            (root / "nanochat" / name).write_bytes(text)
        source = str(root)
    sys.path.insert(0, source)
    return importlib.import_module("nanochat.gpt")


class NanochatLoss(torch.nn.Module):
    """nanochat's GPT behind our call signature: `model(ids, labels=ids).loss` (targets as given)."""

    def __init__(self, gpt):
        super().__init__()
        self.gpt = gpt

    def forward(self, input_ids, labels):
        return type("Output", (), {"loss": self.gpt(input_ids, targets=labels)})


def reference_models(args, device, dtype):
    """(our model, the reference, vocabulary size) with identical random weights."""
    torch.manual_seed(0)
    if args.generation == 1:
        config = NanoChatHFConfig.from_depth(
            args.depth, vocab_size=args.vocab_size or 65536, sequence_len=args.seq_len
        )
        ours = NanoChatHFForCausalLM(config)
        with torch.no_grad():  # nanochat zero-inits the head and projections; random weights exercise everything
            for p in ours.parameters():
                p.normal_(0, 0.02)
        builtin = NativeForCausalLM(config_to_native(config, warn=False))
        builtin.load_state_dict(state_dict_to_native(ours.state_dict()))
        return ours, ("transformers built-in", builtin), config
    gpt = import_nanochat_gpt(args.nanochat_src)
    config = NanoChatHFConfig.from_preset(
        f"d{args.depth}", generation=2, vocab_size=args.vocab_size or 32768, sequence_len=args.seq_len
    )
    reference = gpt.GPT(
        gpt.GPTConfig(
            sequence_len=args.seq_len,
            vocab_size=config.vocab_size,
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_kv_head=config.n_kv_head,
            n_embd=config.n_embd,
            window_pattern=config.window_pattern,
        )
    )
    reference.init_weights()
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # away from the zero-initialised projections
    ours = NanoChatHFForCausalLM(config)
    top_level = ("resid_lambdas", "x0_lambdas", "smear_gate", "smear_lambda", "backout_lambda", "value_embeds")
    ours.load_state_dict(
        {(f"transformer.{k}" if k.split(".")[0] in top_level else k): v for k, v in reference.state_dict().items()}
    )
    return ours, ("nanochat's own GPT", NanochatLoss(reference)), config


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
    parser.add_argument("--generation", type=int, choices=[1, 2], default=1)
    parser.add_argument("--vocab-size", type=int, default=8192, help="nanochat's: 65536 (generation 1), 32768 (2)")
    parser.add_argument("--nanochat-src", help="a nanochat checkout (generation 2; default: the local mirror)")
    parser.add_argument("--seq-len", type=int, default=256, help="nanochat's is 2048")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best round counts")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    ours, (reference_name, reference), config = reference_models(args, device, dtype)
    models = {"nanochat-hf": ours.to(device, dtype).train(), reference_name: reference.to(device, dtype).train()}
    input_ids = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len), device=device)

    print(
        f"generation {args.generation}, depth {args.depth} (width {config.n_embd}, "
        f"{ours.num_parameters() / 1e6:.1f}M params, windows {config.window_pattern}), "
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
    (ours_tps, ours_mem), (ref_tps, ref_mem) = best["nanochat-hf"], best[reference_name]
    print(
        f"  ratio ours / {reference_name}: throughput {ours_tps / ref_tps:.3f}x, "
        f"peak memory {ours_mem / max(ref_mem, 1):.3f}x"
    )


if __name__ == "__main__":
    main()
