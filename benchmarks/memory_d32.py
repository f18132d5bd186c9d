"""d32 in the `12gb` memory mode on any CUDA GPU, capped at 12 GiB: does it fit, and what does offloading cost?

    python benchmarks/memory_d32.py                    # d32, 2048 tokens, bf16 weights, 12 GiB cap, 2 steps x 4
    python benchmarks/memory_d32.py --mode 8gb --cap-gib 8
    python benchmarks/memory_d32.py --device cpu --depth 2 --seq-len 64 --vocab-size 512   # CPU smoke test

Builds the model (fp32 on the CPU, nanochat's init), hands it to the offloading engine (bf16 weights on the
GPU, fp32 masters, fp32 gradient sums and optimizer state in CPU RAM), caps the process with
`torch.cuda.set_per_process_memory_fraction`, and runs `--steps` optimizer steps of `--grad-accum`
micro-steps (the first step is a warm-up; times come from the others). It prints:

- peak GPU memory (`torch.cuda.max_memory_reserved`) against the cap and the planner's prediction;
- micro-step time with gradient streaming, and without it (the same backward with gradients dropped
  instead of copied: pure compute), the wait for the last gradients to be summed, and the optimizer step;
- the overhead share at the DEFAULT total batch (524,288 tokens = 256 micro-steps of 1 x 2048), from the
  measured times: (optimizer step + non-overlapped transfer) / (256 x micro-step + optimizer step), where
  the non-overlapped transfer is 256 x (streaming - compute-only micro-step) + the final summing wait;
- activation memory, predicted by the planner (compiled .. eager: 26 .. 38 bytes per residual element per block) against
  the measured bytes held for backward after the forward pass (CUDA: `memory_allocated` growth; CPU:
  bytes autograd saved).
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM  # noqa: E402
from nanochat_hf.defaults import SEQUENCE_LEN, TOTAL_BATCH_SIZE, VOCAB_SIZE  # noqa: E402
from nanochat_hf.optim.offload import OffloadedMuonAdamW  # noqa: E402
from nanochat_hf.planning.flops import ModelShape  # noqa: E402
from nanochat_hf.planning.gpus import GIB  # noqa: E402
from nanochat_hf.planning.memory import activation_bytes, static_memory  # noqa: E402
from nanochat_hf.planning.memory_modes import MEMORY_MODES  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SavedBytes:
    """Bytes autograd keeps for backward inside the block (distinct storages; parameters excluded)."""

    def __init__(self, parameters):
        self.skip = {p.untyped_storage().data_ptr() for p in parameters}
        self.seen, self.bytes = set(), 0

    def pack(self, tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.skip and storage.data_ptr() not in self.seen:
            self.seen.add(storage.data_ptr())
            self.bytes += storage.nbytes()
        return tensor

    def __enter__(self):
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)


def micro_step(model, ids, device, autocast, measure_activations=False):
    """Forward + backward of one micro-batch; returns (seconds, activation bytes or None)."""
    synchronize(device)
    start = time.perf_counter()
    activations = None
    if measure_activations and device.type == "cuda":
        before = torch.cuda.memory_allocated(device)
        with autocast:
            loss = model(ids, labels=ids).loss
        activations = torch.cuda.memory_allocated(device) - before
    elif measure_activations:
        with SavedBytes(model.parameters()) as saved, autocast:
            loss = model(ids, labels=ids).loss
        activations = saved.bytes
    else:
        with autocast:
            loss = model(ids, labels=ids).loss
    loss.backward()
    synchronize(device)
    return time.perf_counter() - start, activations


def compute_only_micro_step(model, engine, ids, device, autocast) -> float:
    """The same micro-step with each gradient dropped where the engine would copy it: compute alone."""
    for entry in engine._entries.values():
        entry.hook.remove()
    drops = [p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None)) for p in engine._entries]
    try:
        seconds, _ = micro_step(model, ids, device, autocast)
    finally:
        for handle in drops:
            handle.remove()
        for param, entry in engine._entries.items():
            entry.hook = param.register_post_accumulate_grad_hook(engine._gradient_ready)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=SEQUENCE_LEN)
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--grad-accum", type=int, default=4, help="micro-steps per optimizer step (reduced)")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps; the first is a warm-up")
    parser.add_argument("--mode", choices=["12gb", "8gb"], default="12gb")
    parser.add_argument("--cap-gib", type=float, default=12.0, help="per-process GPU memory cap")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", help="also write the measured and planned figures to this JSON file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/memory_d32.py needs a CUDA GPU (none found); use --device cpu for a smoke test")
        return 2
    if device.type == "cuda":
        # Before the first allocation: nanochat's allocator setting, then the 12 GiB cap.
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * GIB / total), device)
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU"
    knobs = MEMORY_MODES[args.mode]
    config = NanoChatHFConfig.from_depth(args.depth, vocab_size=args.vocab_size, sequence_len=args.seq_len)
    shape = ModelShape.from_config(config)
    default_accum = TOTAL_BATCH_SIZE // (args.micro_batch * args.seq_len)
    print(
        f"d{args.depth} (width {config.n_embd}), {args.micro_batch} x {args.seq_len} tokens per micro-step, "
        f"memory mode {args.mode}, on {name}" + (f" capped at {args.cap_gib:g} GiB" if device.type == "cuda" else "")
    )

    build_start = time.perf_counter()
    torch.manual_seed(0)
    model = NanoChatHFForCausalLM(config)  # fp32 on the CPU: exact masters
    model.loss_chunk_size = knobs.loss_chunk_size or None
    if knobs.activation_checkpointing == "block":
        model.activation_checkpointing_enable({"use_reentrant": False})
    engine = OffloadedMuonAdamW(
        model, device=device, grad_bucket_layers=knobs.grad_bucket_layers, max_grad_norm=1.0
    )  # bf16 weights on the device from here on
    model.train()
    print(f"  built in {time.perf_counter() - build_start:.1f} s")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    generator = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, args.vocab_size, (args.micro_batch, args.seq_len), generator=generator).to(device)
        for _ in range(args.grad_accum)
    ]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    micro_times, finish_times, step_times, activations = [], [], [], None
    for step in range(args.steps):
        for ids in batches:
            seconds, measured = micro_step(model, ids, device, autocast, measure_activations=activations is None)
            activations = activations if measured is None else measured
            if step > 0 or args.steps == 1:
                micro_times.append(seconds)
        start = time.perf_counter()
        engine.finish_accumulation()
        finish = time.perf_counter() - start
        start = time.perf_counter()
        engine.step()
        synchronize(device)
        if step > 0 or args.steps == 1:
            finish_times.append(finish)
            step_times.append(time.perf_counter() - start)
    compute_only = statistics.median(
        compute_only_micro_step(model, engine, ids, device, autocast) for ids in batches[: min(3, len(batches))]
    )
    engine.zero_grad()

    micro = statistics.median(micro_times)
    optimizer_step = statistics.median(step_times)
    finish = statistics.median(finish_times)
    exposed = default_accum * max(0.0, micro - compute_only) + finish
    overhead = (optimizer_step + exposed) / (default_accum * micro + optimizer_step)
    print(
        f"  micro-step             {micro * 1000:9.1f} ms (compute only, gradients dropped: {compute_only * 1000:.1f} ms)"
    )
    print(f"  final summing wait     {finish * 1000:9.1f} ms")
    print(f"  optimizer step         {optimizer_step * 1000:9.1f} ms")
    print(
        f"  overhead at the default batch ({default_accum} micro-steps): {overhead:.2%} "
        f"= ({optimizer_step:.2f} s step + {exposed:.2f} s non-overlapped transfer) / "
        f"({default_accum} x {micro:.3f} s + {optimizer_step:.2f} s)"
    )
    static = static_memory(shape, knobs)
    compiled, eager = activation_bytes(shape, args.micro_batch, knobs.activation_checkpointing == "block")
    mib = 2**20
    print(
        f"  activation memory: predicted {compiled / mib:,.1f} .. {eager / mib:,.1f} MiB (compiled .. eager), "
        f"measured {activations / mib:,.1f} MiB ({activations / eager:.2f} x eager)"
    )
    print(f"  CPU RAM state (planned): {static.cpu_total / GIB:.2f} GiB")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_reserved(device)
        print(
            f"  peak GPU memory reserved {peak / GIB:.2f} GiB of the {args.cap_gib:g} GiB cap "
            f"(planned static {static.gpu_total / GIB:.2f} + activations {compiled / GIB:.2f}..{eager / GIB:.2f} GiB): "
            + ("fits" if peak <= args.cap_gib * GIB else "OVER THE CAP")
        )
    else:
        peak = None
        print("  peak GPU memory: n/a on the CPU")
    if args.json:
        results = {
            "device": name,
            "depth": args.depth,
            "mode": args.mode,
            "cap_gib": args.cap_gib if device.type == "cuda" else None,
            "micro_step_s": micro,
            "compute_only_micro_step_s": compute_only,
            "final_summing_wait_s": finish,
            "optimizer_step_s": optimizer_step,
            "default_accumulation": default_accum,
            "overhead_fraction": overhead,
            "activations_measured_bytes": activations,
            "activations_planned_bytes": [compiled, eager],
            "activation_ratio_to_eager_plan": activations / eager,
            "static_gpu_planned_bytes": static.gpu_total,
            "cpu_state_planned_bytes": static.cpu_total,
            "peak_reserved_bytes": peak,
        }
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
