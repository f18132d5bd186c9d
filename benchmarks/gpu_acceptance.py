"""The GPU acceptance run: every GPU claim of this package, measured in one prepared command.

    python benchmarks/gpu_acceptance.py                  # any CUDA GPU; <= 8 minutes on an H100/H200
    python benchmarks/gpu_acceptance.py --quick          # smoke pass on the CPU: same code, tiny shapes (CI)
    python benchmarks/gpu_acceptance.py --only decode train_d20_gen1 --budget-s 300

On an offline GPU machine, install first from the wheels `benchmarks/gpu_wheels.sh` collected elsewhere:
`pip install --no-index --find-links wheels wheels/nanochat_hf-*.whl "nanochat-hf[test,chat,quant]"`.

Each section runs in a subprocess of its own (a section that runs out of memory or crashes cannot take the
others with it, and a per-process memory cap stays inside its section), under a share of the time budget.
What the sections measure, against which target:

- `gpu_tests`: `pytest -m gpu` (bf16 parity, CUDA engine vs CPU engine, paged 8-bit AdamW, FP8 check);
  target: no failures.
- `offload_d32_gen1_12gb`: d32 (generation 1) in the `12gb` memory mode capped at 12 GiB
  (`benchmarks/memory_d32.py`): peak `max_memory_reserved` <= 12 GiB, offloading overhead < 5 % of the
  step at the default batch, measured activations within 15 % of the planner's eager estimate.
- `train_d20_gen1`: tokens/s and MFU of full training steps (forward, backward, nanochat's Muon + AdamW step)
  at d20 with nanochat's 8xH100 per-device micro-batch (32 x 2048), bf16 autocast, `torch.compile`; MFU is
  6N-style model FLOPs per token (`planning.flops`) x tokens/s / the card's dense BF16 peak (`gpus.csv`),
  printed as a ratio to nanochat's own 50.9 % (d32, H100, generation 1); target: ratio >= 1.
- `decode`: greedy decoding tokens/s with the KV cache at batch 1 and 32 (128 new tokens).
- `train_d24_gen2`: the same for generation 2's d24 (nanochat's 2026 speedrun shape, 16 x 2048 per GPU, its
  MuonAdamW), in bf16 against nanochat's ~50 % MFU and, on cards with FP8 tensor cores and torchao, with FP8
  matmuls against ~58 %; target: FP8 >= 1.15x bf16 tokens/s.
- `offload_d24_gen2_12gb`: generation 2's d24 in its `12gb` memory mode (wte and value embeddings in CPU RAM,
  rows gathered per micro-step, per-block activation checkpointing) at the RTX 4070 config's micro-batch 2,
  capped at 12 GiB, against `full` at the same micro-batch (uncapped): peak `max_memory_reserved` <= 12 GiB,
  peak allocated within 15 % of the planner's bytes, and the measured CPU-side times (per micro-step: rows
  out, gradients back; per update: the CPU AdamW of the tables) beside the planner's.

Writes `acceptance.json` (every figure, with GPU name, torch version, commit and date) and `acceptance.md`
(a table a person reads) into `--out` (default `runs/gpu-acceptance`).
"""

import argparse
import datetime
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM  # noqa: E402
from nanochat_hf.fp8 import enable_fp8  # noqa: E402
from nanochat_hf.optim import build_optimizer  # noqa: E402
from nanochat_hf.optim.host_embeddings import place_embeddings_on_host  # noqa: E402
from nanochat_hf.optim.setup_gen2 import build_gen2_training  # noqa: E402
from nanochat_hf.planning.choice import choose_mode  # noqa: E402
from nanochat_hf.planning.flops import ModelShape, flops_per_token  # noqa: E402
from nanochat_hf.planning.gpus import get_gpu, resolve_gpu  # noqa: E402
from nanochat_hf.planning.time_energy import (  # noqa: E402
    CPU_ROWS_ADAMW_BYTES_PER_PARAM,
    HOST_DRAM_GBS,
    row_transfer_seconds,
)


# nanochat's published MFU: d32 generation 1 on 8xH100 (run1000.sh's report).
NANOCHAT_MFU_GEN1 = 0.509
# nanochat's 2026 d24/d26 runs on H100: about 50 % MFU in bf16, 58 % with FP8 (the leaderboard's reports).
NANOCHAT_MFU_GEN2_BF16 = 0.50
NANOCHAT_MFU_GEN2_FP8 = 0.58
FP8_SPEEDUP_TARGET = 1.15
OVERHEAD_TARGET = 0.05
ACTIVATION_TOLERANCE = 0.15
CAP_GIB = 12.0

# Shapes of the full run and of --quick (CPU, seconds).
FULL = {
    "offload": ["--depth", "32", "--grad-accum", "4", "--steps", "2"],
    "train": {"depth": 20, "micro_batch": 32, "seq_len": 2048, "vocab_size": 65536, "steps": 5, "compile": True},
    # nanochat's 2026 speedrun: d24, 16 x 2048 per H100.
    "train_gen2": {"depth": 24, "micro_batch": 16, "seq_len": 2048, "vocab_size": 32768, "steps": 5, "compile": True},
    "decode": {"depth": 20, "vocab_size": 65536, "prompt": 16, "new_tokens": 128, "batches": (1, 32)},
    # recipes/configs/pretrain_gpt2_rtx4070.yaml: d24, 2 x 2048 per micro-step.
    "offload_gen2": {"depth": 24, "micro_batch": 2, "seq_len": 2048, "vocab_size": 32768, "steps": 3},
    "pytest": ["tests"],
}
QUICK = {
    "offload": ["--device", "cpu", "--depth", "2", "--seq-len", "32", "--vocab-size", "512", "--grad-accum", "2"],
    "train": {"depth": 2, "micro_batch": 2, "seq_len": 64, "vocab_size": 512, "steps": 2, "compile": False},
    "train_gen2": {"depth": 2, "micro_batch": 2, "seq_len": 64, "vocab_size": 512, "steps": 2, "compile": False},
    "decode": {"depth": 2, "vocab_size": 512, "prompt": 8, "new_tokens": 8, "batches": (1, 4)},
    "offload_gen2": {"depth": 2, "micro_batch": 2, "seq_len": 64, "vocab_size": 512, "steps": 2},
    "pytest": ["tests/test_memory_knobs.py"],
}


# ---------------------------------------------------------------------------------------------------------
# Sections (each runs in its own process: `gpu_acceptance.py --section NAME --section-out FILE`)


def section_gpu_tests(shapes: dict, device: str) -> dict:
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *shapes["pytest"]]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-500:]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)}
    failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    # pytest exits 5 when every test was deselected (no GPU test collected): not a failure of the code.
    return {
        "summary": summary,
        **counts,
        "targets": {"no failures": failed == 0 and result.returncode in (0, 5)},
    }


def section_offload(shapes: dict, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "offload.json"
        command = [sys.executable, str(REPO / "benchmarks" / "memory_d32.py"), *shapes["offload"], "--json", str(out)]
        if device == "cuda":
            command += ["--cap-gib", str(CAP_GIB)]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"memory_d32.py exited {result.returncode}: {result.stdout[-800:]}{result.stderr[-800:]}"
            )
        figures = json.loads(out.read_text())
    targets = {
        f"overhead < {OVERHEAD_TARGET:.0%}": figures["overhead_fraction"] < OVERHEAD_TARGET,
        f"activations within {ACTIVATION_TOLERANCE:.0%} of the plan": abs(
            figures["activation_ratio_to_eager_plan"] - 1
        )
        <= ACTIVATION_TOLERANCE,
    }
    if figures["peak_reserved_bytes"] is not None:
        targets[f"peak reserved <= {CAP_GIB:g} GiB"] = figures["peak_reserved_bytes"] <= CAP_GIB * 2**30
    return {**figures, "targets": targets}


def _random_model(depth: int, vocab_size: int, seq_len: int, device, generation: int = 1):
    torch.manual_seed(0)
    config = NanoChatHFConfig.from_depth(depth, vocab_size=vocab_size, sequence_len=seq_len, generation=generation)
    model = NanoChatHFForCausalLM(config)
    with torch.no_grad():  # nanochat zero-inits the head and projections; random weights exercise everything
        for param in model.parameters():
            param.normal_(0, 0.02)
    return model.to(device)


def section_train(shapes: dict, device: str) -> dict:
    return measure_training(shapes["train"], device, generation=1, reference_mfu=NANOCHAT_MFU_GEN1)


def section_train_gen2(shapes: dict, device: str) -> dict:
    """Generation 2's d24 in bf16, and with FP8 matmuls where the card has FP8 tensor cores."""
    s = shapes["train_gen2"]
    bf16 = measure_training(s, device, generation=2, reference_mfu=NANOCHAT_MFU_GEN2_BF16)
    figures = {f"bf16_{key}": value for key, value in bf16.items() if key not in ("targets", "shape")}
    targets = dict(bf16["targets"])
    gpu = resolve_gpu() if device == "cuda" else None
    if gpu is not None and gpu.supports_fp8 and importlib.util.find_spec("torchao") is not None:
        fp8 = measure_training(s, device, generation=2, reference_mfu=NANOCHAT_MFU_GEN2_FP8, fp8=True)
        figures.update({f"fp8_{key}": value for key, value in fp8.items() if key not in ("targets", "shape")})
        speedup = fp8["tokens_per_s"] / bf16["tokens_per_s"]
        figures["fp8_speedup"] = speedup
        targets[f"FP8 >= {FP8_SPEEDUP_TARGET}x bf16 tokens/s"] = speedup >= FP8_SPEEDUP_TARGET
    else:
        figures["fp8"] = "not run: no FP8 tensor cores or no torchao here"
    return {**figures, "shape": s, "targets": targets}


def measure_training(s: dict, device: str, *, generation: int, reference_mfu: float, fp8: bool = False) -> dict:
    """tokens/s and MFU of full training steps (forward, backward, the generation's optimizer step)."""
    model = _random_model(s["depth"], s["vocab_size"], s["seq_len"], device, generation=generation).train()
    if fp8:
        enable_fp8(model)
    if generation == 2:
        optimizer = build_gen2_training(model, {"num_iterations": 1000}).optimizer
    else:
        optimizer = build_optimizer(model)
    forward = torch.compile(model) if s["compile"] else model
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    ids = torch.randint(0, s["vocab_size"], (s["micro_batch"], s["seq_len"]), device=device)

    def step():
        with autocast:
            loss = forward(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    for _ in range(2):  # compilation and warm-up
        step()
    warmup = time.perf_counter() - start
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(s["steps"]):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tokens_per_s = ids.numel() * s["steps"] / elapsed
    flops = flops_per_token(ModelShape.from_config(model.config))
    gpu = resolve_gpu() if device == "cuda" else None
    peak = gpu.peak_bf16_flops if gpu is not None else None
    mfu = tokens_per_s * flops / peak if peak else None
    figures = {
        "shape": s,
        "warmup_s": warmup,
        "step_s": elapsed / s["steps"],
        "tokens_per_s": tokens_per_s,
        "flops_per_token": flops,
        "peak_bf16_flops": peak,
        "mfu": mfu,
        "mfu_ratio_to_nanochat": mfu / reference_mfu if mfu is not None else None,
        "peak_allocated_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
    }
    targets = {} if mfu is None else {f"MFU >= nanochat's {reference_mfu:.1%}": mfu >= reference_mfu}
    return {**figures, "targets": targets}


def section_decode(shapes: dict, device: str) -> dict:
    s = shapes["decode"]
    model = _random_model(s["depth"], s["vocab_size"], 2048, device).eval()
    if device == "cuda":
        model = model.to(torch.bfloat16)
    figures = {}
    for batch in s["batches"]:
        ids = torch.randint(0, s["vocab_size"], (batch, s["prompt"]), device=device)
        kwargs = dict(max_new_tokens=s["new_tokens"], min_new_tokens=s["new_tokens"], do_sample=False)
        with torch.no_grad():
            model.generate(ids, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = model.generate(ids, **kwargs)
            if device == "cuda":
                torch.cuda.synchronize()
        new = out.shape[1] - ids.shape[1]
        figures[f"batch_{batch}_tokens_per_s"] = batch * new / (time.perf_counter() - start)
    return {**figures, "shape": {**s, "batches": list(s["batches"])}, "targets": {}}


def _timed(device: str, work) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    work()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _micro_and_update_seconds(model, optimizer, ids, steps: int, device: str) -> tuple[float, float]:
    """Median seconds of one micro-step (forward + backward) and of one optimizer update, after a warm-up."""
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def micro_step():
        with autocast:
            model(ids, labels=ids).loss.backward()

    def update():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    micro, updates = [], []
    for index in range(steps + 1):
        seconds = _timed(device, micro_step), _timed(device, update)
        if index:  # the first is the warm-up (allocations, the CPU AdamW's first state)
            micro.append(seconds[0])
            updates.append(seconds[1])
    return sorted(micro)[len(micro) // 2], sorted(updates)[len(updates) // 2]


def section_offload_gen2(shapes: dict, device: str) -> dict:
    """Generation 2's d24 in `12gb` (cpu_rows + checkpointing) under a 12 GiB cap, against `full`."""
    s = shapes["offload_gen2"]
    rtx4070 = get_gpu("rtx4070")
    ids = torch.randint(0, s["vocab_size"], (s["micro_batch"], s["seq_len"]), device=device)
    figures = {"shape": s}
    for mode in ("full", "12gb"):
        model = _random_model(s["depth"], s["vocab_size"], s["seq_len"], device, generation=2).train()
        if mode == "12gb":
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.set_per_process_memory_fraction(CAP_GIB * 2**30 / torch.cuda.mem_get_info()[1])
                torch.cuda.reset_peak_memory_stats()
            # bf16 rows under bf16 autocast (CUDA); the CPU pass has no autocast, so its rows stay fp32.
            placement = place_embeddings_on_host(model, torch.bfloat16 if device == "cuda" else torch.float32)
            model.gradient_checkpointing_enable({"use_reentrant": False})
        optimizer = build_gen2_training(model, {"num_iterations": 1000}).optimizer
        micro, update = _micro_and_update_seconds(model, optimizer, ids, s["steps"], device)
        figures[f"{mode}_micro_step_s"], figures[f"{mode}_update_s"] = micro, update
        if device == "cuda":
            figures[f"{mode}_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
            figures[f"{mode}_peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        del model, optimizer
    shape = ModelShape.from_depth(s["depth"], s["vocab_size"], s["seq_len"], generation=2)
    overrides = {"micro_batch": s["micro_batch"], "weight_cast_copies": True}
    plan = choose_mode(shape, rtx4070, "12gb", overrides).memory
    figures["planned_gpu_bytes"] = plan.total
    figures["planned_rows_s_per_micro_step_rtx4070"] = row_transfer_seconds(shape, rtx4070, plan)
    figures["planned_cpu_adamw_s"] = placement.num_params * CPU_ROWS_ADAMW_BYTES_PER_PARAM / (HOST_DRAM_GBS * 1e9)
    figures["measured_cpu_side_update_s"] = figures["12gb_update_s"] - figures["full_update_s"]
    figures["micro_step_ratio_12gb_to_full"] = figures["12gb_micro_step_s"] / figures["full_micro_step_s"]
    targets = {}
    if device == "cuda":
        peak = figures["12gb_peak_allocated_bytes"]
        targets[f"peak reserved <= {CAP_GIB:g} GiB"] = figures["12gb_peak_reserved_bytes"] <= CAP_GIB * 2**30
        targets[f"peak allocated within {ACTIVATION_TOLERANCE:.0%} of the plan"] = (
            abs(peak / plan.total - 1) <= ACTIVATION_TOLERANCE
        )
    return {**figures, "targets": targets}


SECTIONS = {
    "gpu_tests": (section_gpu_tests, 0.22),
    "offload_d32_gen1_12gb": (section_offload, 0.22),
    "train_d20_gen1": (section_train, 0.16),
    "train_d24_gen2": (section_train_gen2, 0.20),
    "decode": (section_decode, 0.10),
    "offload_d24_gen2_12gb": (section_offload_gen2, 0.10),
}


# ---------------------------------------------------------------------------------------------------------
# The driver


def run_section(name: str, quick: bool, device: str, timeout_s: float) -> dict:
    """One section in a subprocess, under `timeout_s`; always returns a record (status ok / failed / timeout)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "section.json"
        command = [sys.executable, __file__, "--section", name, "--section-out", str(out), "--device", device]
        command += ["--quick"] if quick else []
        start = time.perf_counter()
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "seconds": timeout_s, "error": f"over its {timeout_s:.0f} s share"}
        seconds = time.perf_counter() - start
        if result.returncode != 0 or not out.exists():
            tail = (result.stdout + result.stderr).strip().splitlines()[-8:]
            return {"status": "failed", "seconds": seconds, "error": "\n".join(tail)}
        record = json.loads(out.read_text())
    if "not_run" in record:
        status = "not run"
    elif quick:  # tiny shapes on the CPU: the code ran; the GPU targets say nothing here
        status = "smoke"
    else:
        status = "ok" if all(record["targets"].values()) else "missed"
    return {"status": status, "seconds": seconds, **record}


def environment(device: str) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip() or None,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device == "cuda" else "CPU",
        "cuda": torch.version.cuda,
    }


def render_markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"# GPU acceptance{' (quick smoke pass)' if report['quick'] else ''}",
        "",
        f"{env['device']}, torch {env['torch']}, commit {env['commit']}, {env['date']}, "
        f"{report['seconds']:.0f} s in all.",
        "",
        "| section | status | seconds | figures | targets |",
        "|---|---|---|---|---|",
    ]
    for name, record in report["sections"].items():
        figures = ", ".join(
            f"{key} {_fmt(value)}"
            for key, value in record.items()
            if key not in ("status", "seconds", "targets", "shape", "summary") and not isinstance(value, (dict, list))
        )
        targets = ", ".join(f"{'met' if ok else 'MISSED'}: {what}" for what, ok in record.get("targets", {}).items())
        lines.append(f"| {name} | {record['status']} | {record['seconds']:.1f} | {figures} | {targets or '-'} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU smoke pass with tiny shapes (what CI runs)")
    parser.add_argument(
        "--out", default=str(REPO / "runs" / "gpu-acceptance"), help="folder for the JSON and Markdown"
    )
    parser.add_argument(
        "--budget-s", type=float, help="time for all sections together (default 480 s; --quick: 1800 s on a CPU)"
    )
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections")
    parser.add_argument("--device", help=argparse.SUPPRESS)
    parser.add_argument("--section", choices=list(SECTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--section-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shapes = QUICK if args.quick else FULL

    if args.section:  # inside a section's own process
        function, _ = SECTIONS[args.section]
        Path(args.section_out).write_text(json.dumps(function(shapes, args.device), indent=2, default=str))
        return 0

    device = "cpu" if args.quick else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu_acceptance.py needs a CUDA GPU (none found); --quick runs the CPU smoke pass")
        return 2
    if args.budget_s is None:
        args.budget_s = 1800.0 if args.quick else 480.0
    if args.budget_s <= 0:
        print(f"--budget-s must be positive, got {args.budget_s}")
        return 2
    names = args.only or list(SECTIONS)
    shares = sum(SECTIONS[name][1] for name in names)
    start, sections = time.perf_counter(), {}
    print(f"GPU acceptance{' (quick)' if args.quick else ''}: {len(names)} sections in at most {args.budget_s:.0f} s")
    for index, name in enumerate(names, 1):
        left = args.budget_s - (time.perf_counter() - start)
        share = max(30.0, args.budget_s * SECTIONS[name][1] / shares)
        if left <= 0:
            sections[name] = {"status": "not run", "seconds": 0.0, "not_run": "time budget spent"}
        else:
            print(f"[{index}/{len(names)}] {name} (up to {min(share, left):.0f} s) ...", flush=True)
            sections[name] = run_section(name, args.quick, device, min(share, left))
        record = sections[name]
        print(
            f"      {record['status']} in {record['seconds']:.1f} s"
            + (f": {record['error']}" if "error" in record else "")
        )
    report = {
        "quick": args.quick,
        "environment": environment(device),
        "seconds": time.perf_counter() - start,
        "sections": sections,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for filename, text in (
        ("acceptance.json", json.dumps(report, indent=2, default=str)),
        ("acceptance.md", render_markdown(report)),
    ):
        temporary = out / f".{filename}.tmp"
        temporary.write_text(text)
        temporary.replace(out / filename)
    print(render_markdown(report))
    print(f"written: {out / 'acceptance.json'} and {out / 'acceptance.md'}")
    failed = [name for name, record in sections.items() if record["status"] in ("failed", "timeout")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
