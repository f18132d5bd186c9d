"""Full pretraining steps (forward, backward, nanochat's Muon + AdamW step) at a given shape.

    python benchmarks/pretrain_step.py                       # a small shape: about a minute on 2 CPU cores
    python benchmarks/pretrain_step.py --depth 4 --vocab-size 65536 --micro-batch 4 --seq-len 512 --variants all
    python benchmarks/pretrain_step.py --depth 20 --vocab-size 65536 --micro-batch 8 --seq-len 2048 --dtype bfloat16

Runs variants in the same process - plain, gradient checkpointing, torch.compile, both - and prints
tokens/s and peak memory of each, with ratios against the plain run. By default the two without
torch.compile on a CPU (compiling takes minutes there) and all four on a GPU; `--variants` picks (`all`).

Trainer overhead (`--compare trainer`, about 1-2 minutes on 2 CPU cores at the default shape):

    python benchmarks/pretrain_step.py --compare trainer
    python benchmarks/pretrain_step.py --compare trainer --repeats 3 --steps 10

In one process, four paths run the same full optimizer steps (forward, backward, nanochat's optimizer and
LR schedule) on the same fixed random rows:
  - generation 2 through `NanoChatPretrainer` (`gen2_settings=`: `build_gen2_training`'s MuonAdamW and
    schedule, no gradient clipping), and the same math as a bare PyTorch loop;
  - generation 1 through `NanoChatPretrainer` (`optimizer_settings=`: `build_optimizer`'s Muon + AdamW,
    nanochat's schedule, clipping at 1.0), and its own bare loop.
Each bare loop builds the same model (same seed) and the same optimizer and schedule objects the Trainer
builds, feeds the same micro-batches, and does what the Trainer does per step: loss / accumulation,
backward, (clip,) optimizer.step, schedule step, zero_grad. `tests/test_benchmark_pretrain_step.py`
checks that each bare loop gives the Trainer's per-step losses.

What is timed: the wall time from the end of one optimizer step to the end of the next (for the Trainer,
`on_step_end` to `on_step_end`, so the interval holds everything it does per step: its data loader and
collation, callbacks, `.item()` checks, grad-norm, logging every step), after `--warmup-steps` untimed
steps (optimizer state allocation, first-call costs). The rows are generated once before the run, so
reading data costs nothing in either path. On Linux the run first tells glibc's malloc to keep freed
memory instead of returning it to the system (`mallopt`): otherwise every 32 MB logits tensor is a fresh
mmap whose pages fault in again, which made whichever path ran first or last up to 8 % slower for
reasons that have nothing to do with the Trainer (PyTorch's CUDA caching allocator does the same on a
GPU). The paths alternate, reversed every repeat; the step time of
a path is the median of all its timed steps (robust to a busy machine; the mean is printed beside it).
`--attribute` adds a measure that other jobs' noise does not move: one Trainer run per generation under
cProfile, and the share of the Trainer's epoch loop spent outside `training_step` (forward, backward) and
the optimizer's `step` - the Trainer's own work plus the schedule step, zero_grad and clipping a bare loop
does too, so an upper bound on the overhead (cProfile's own cost falls mostly on the many small calls
inside the model, so the share it prints is if anything low by a little).

Not measured: Trainer construction, `train()` start-up, and the recipe's metric callbacks (throughput,
energy, evaluation), which `run_pretraining` adds on top.
"""

import argparse
import cProfile
import ctypes
import ctypes.util
import pstats
import statistics
import sys
import tempfile
import time

import torch
from measure import PeakMemory
from torch.utils.data import IterableDataset
from transformers import PrinterCallback, TrainerCallback, default_data_collator

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.optim import build_optimizer, get_nanochat_schedule
from nanochat_hf.optim.scaling_gen2 import Gen2Settings
from nanochat_hf.optim.setup_gen2 import build_gen2_training
from nanochat_hf.training import NanoChatPretrainer, PretrainTrainingArguments


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


# ---------------------------------------------------------------------------------------------------------
# Trainer overhead (--compare trainer): NanoChatPretrainer against a bare loop of the same math

# Short LR warm-ups, so that the schedule changes the LR from the first update on: a bare loop that forgot
# to step its schedule then gives other losses from step 3 on (the test compares per-step losses).
GEN1_SCHEDULE = {"warmup_ratio": 0.5, "warmdown_ratio": 0.5, "final_lr_frac": 0.1}
GEN2_WARMUP_STEPS = 2
GEN1_MAX_GRAD_NORM = 1.0  # the Trainer's default, which generation-1 recipes keep; generation 2 does not clip


class FixedRows(IterableDataset):
    """Rows generated once, handed out in order and round again: what `NanoChatPretrainer` reads from a
    `PretrainDataset` (the same keys, one lane, nothing restored), at no data cost."""

    start_rows, num_lanes = 0, 1  # what the pretrainer's data loader asks a stream

    def __init__(self, rows: torch.Tensor):
        self.rows = rows  # (count, seq_len + 1) token ids

    def __iter__(self):
        while True:
            for row in self.rows:
                # PretrainDataset's row format: every one of the seq_len targets counts (`shift_labels`).
                yield {"input_ids": row[:-1], "labels": row[:-1].clone(), "shift_labels": row[1:]}


def random_rows(count: int, seq_len: int, vocab_size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (count, seq_len + 1), generator=generator)


def micro_batches(rows: torch.Tensor, micro_batch: int, count: int, device) -> list[dict]:
    """The first `count` micro-batches the Trainer's data loader makes of `FixedRows(rows)`."""
    stream = iter(FixedRows(rows))
    batches = []
    for _ in range(count):
        batch = default_data_collator([next(stream) for _ in range(micro_batch)])
        batches.append({key: value.to(device) for key, value in batch.items()})
    return batches


def fresh_model(config: NanoChatHFConfig, device) -> NanoChatHFForCausalLM:
    torch.manual_seed(0)  # the same initial weights on every path
    return NanoChatHFForCausalLM(config).to(device).train()


def gen2_settings(steps: int, tokens_per_step: int) -> Gen2Settings:
    """Generation 2's optimizer settings for a run of `steps` updates of `tokens_per_step` tokens."""
    return Gen2Settings(num_iterations=steps, total_batch_size=tokens_per_step, warmup_steps=GEN2_WARMUP_STEPS)


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class StepClock(TrainerCallback):
    """The wall clock at the end of every optimizer step (after the optimizer, schedule and zero_grad)."""

    def __init__(self, device):
        self.device, self.ends = device, []

    def on_step_end(self, args, state, control, **kwargs):
        synchronize(self.device)
        self.ends.append(time.perf_counter())


def trainer_run(config, rows, *, micro_batch, grad_accum, steps, device="cpu", dtype=torch.float32):
    """`steps` optimizer steps through `NanoChatPretrainer`: (per-step losses, step end times)."""
    generation, device = config.generation, torch.device(device)
    tokens_per_step = micro_batch * (rows.shape[1] - 1) * grad_accum  # seq_len targets per row
    with tempfile.TemporaryDirectory() as output_dir:
        args = PretrainTrainingArguments(
            output_dir=output_dir,
            max_steps=steps,
            per_device_train_batch_size=micro_batch,
            gradient_accumulation_steps=grad_accum,
            max_grad_norm=0.0 if generation == 2 else GEN1_MAX_GRAD_NORM,
            logging_steps=1,  # the most logging a run can ask for: the overhead measured is an upper bound
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            use_cpu=device.type == "cpu",
            bf16=dtype == torch.bfloat16,
            remove_unused_columns=False,  # keep `shift_labels`, as the recipe does
            ignore_data_skip=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=0,
        )
        if generation == 2:
            optimizer = {
                "gen2_settings": gen2_settings(steps, tokens_per_step),
                "gen2_total_batch_size": tokens_per_step,
            }
        else:
            optimizer = {"optimizer_settings": {}, "schedule_settings": dict(GEN1_SCHEDULE)}
        clock = StepClock(device)
        trainer = NanoChatPretrainer(
            model=fresh_model(config, device),
            args=args,
            train_dataset=FixedRows(rows),
            callbacks=[clock],
            **optimizer,
        )
        # With tqdm off the Trainer prints every log as a dict; the bare loop prints nothing either.
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return losses, clock.ends


def bare_run(config, rows, *, micro_batch, grad_accum, steps, device="cpu", dtype=torch.float32):
    """The same `steps` optimizer steps as a plain PyTorch loop: (per-step losses, step end times).

    Same model init, the optimizer and schedule built by the same functions as the Trainer's, the same
    micro-batches; per step what the Trainer does: loss / accumulation, backward, (clip,) step, zero_grad."""
    device = torch.device(device)
    model = fresh_model(config, device)
    tokens_per_step = micro_batch * (rows.shape[1] - 1) * grad_accum
    if config.generation == 2:
        training = build_gen2_training(model, gen2_settings(steps, tokens_per_step), total_batch_size=tokens_per_step)
        optimizer, max_grad_norm = training.optimizer, 0.0
        schedule = training.create_scheduler(optimizer, steps)
    else:
        optimizer, max_grad_norm = build_optimizer(model), GEN1_MAX_GRAD_NORM
        schedule = get_nanochat_schedule(optimizer, steps, **GEN1_SCHEDULE)
    batches = micro_batches(rows, micro_batch, steps * grad_accum, device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    losses, ends = [], []
    for step in range(steps):
        step_loss = 0.0
        for batch in batches[step * grad_accum : (step + 1) * grad_accum]:
            with autocast:
                loss = model(**batch).loss / grad_accum
            loss.backward()
            step_loss += loss.detach()  # kept on the device: no sync inside the step
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        ends.append(time.perf_counter())
        losses.append(step_loss)
    return [float(loss) for loss in losses], ends


PATHS = {"trainer": trainer_run, "bare": bare_run}


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to reuse freed blocks (no mmap per large tensor, no trimming): see the docstring."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    limit = 1 << 30  # blocks up to 1 GiB come from the heap and stay there once freed
    return libc.mallopt(m_trim_threshold, limit) == 1 and libc.mallopt(m_mmap_threshold, limit) == 1


def compare_trainer(args, device, dtype) -> dict:
    """Time the four paths, alternating; print tokens/s, Trainer/bare and gen2/gen1. Returns the step times."""
    heap = "kept (mallopt)" if keep_freed_memory() else "as the C library manages it"
    configs = {
        generation: NanoChatHFConfig.from_depth(
            args.depth, vocab_size=args.vocab_size, sequence_len=args.seq_len, generation=generation
        )
        for generation in (2, 1)
    }
    steps = args.warmup_steps + args.steps
    rows = random_rows(args.micro_batch * args.grad_accum * steps, args.seq_len, args.vocab_size)
    tokens_per_step = args.micro_batch * args.seq_len * args.grad_accum
    print(
        f"depth {args.depth} (width {configs[2].n_embd}), micro-batch {args.micro_batch} x {args.seq_len}, "
        f"accumulation {args.grad_accum} ({tokens_per_step:,} tokens/step), {args.dtype} on {device}, "
        f"{torch.get_num_threads()} torch threads"
    )
    print(
        f"timed: {args.steps} steps per run after {args.warmup_steps} warm-up steps, end of one optimizer step "
        f"to the end of the next; {args.repeats} repeats, paths alternating; freed host memory {heap}"
    )
    order = [(generation, path) for generation in (2, 1) for path in PATHS]
    times = {key: [] for key in order}
    for repeat in range(args.repeats):
        for generation, path in order if repeat % 2 == 0 else order[::-1]:
            _, ends = PATHS[path](
                configs[generation],
                rows,
                micro_batch=args.micro_batch,
                grad_accum=args.grad_accum,
                steps=steps,
                device=device,
                dtype=dtype,
            )
            timed = [b - a for a, b in zip(ends[args.warmup_steps - 1 :], ends[args.warmup_steps :], strict=False)]
            times[generation, path] += timed
            print(
                f"  repeat {repeat + 1}: generation {generation} {path:<7} "
                f"{statistics.median(timed) * 1e3:8.1f} ms/step (median)",
                flush=True,
            )
    median = {key: statistics.median(values) for key, values in times.items()}
    mean = {key: statistics.fmean(values) for key, values in times.items()}
    for (generation, path), seconds in median.items():
        print(
            f"  generation {generation} {path:<7} {tokens_per_step / seconds:>10,.0f} tokens/s   "
            f"{seconds * 1e3:8.1f} ms/step median, {mean[generation, path] * 1e3:8.1f} mean "
            f"({len(times[generation, path])} steps)"
        )
    overhead = {g: median[g, "trainer"] / median[g, "bare"] - 1 for g in (2, 1)}
    mean_overhead = {g: mean[g, "trainer"] / mean[g, "bare"] - 1 for g in (2, 1)}
    for generation in (2, 1):
        print(
            f"  generation {generation}: Trainer / bare {1 + overhead[generation]:.3f} "
            f"(means: {1 + mean_overhead[generation]:.3f})"
        )
    for path in PATHS:
        print(f"  {path}: generation 2 / generation 1 {median[1, path] / median[2, path]:.2f}x the tokens/s")
    print(f"Trainer overhead: {overhead[2] * 100:.1f} % (generation 2), {overhead[1] * 100:.1f} % (generation 1)")
    if args.attribute:
        for generation in (2, 1):
            share = trainer_own_share(configs[generation], rows, args, device, dtype)
            print(
                f"  generation {generation}: {share * 100:.1f} % of the Trainer's epoch loop is outside "
                "training_step and optimizer.step (cProfile, one run)"
            )
    return times


def trainer_own_share(config, rows, args, device, dtype) -> float:
    """The share of the Trainer's epoch loop spent outside `training_step` (forward, backward) and the
    optimizer's `step`: the Trainer's own work per step plus what a bare loop also does there (schedule step,
    zero_grad, clipping) - an upper bound on its overhead that does not depend on other jobs' noise."""
    profile = cProfile.Profile()
    profile.enable()
    trainer_run(
        config,
        rows,
        micro_batch=args.micro_batch,
        grad_accum=args.grad_accum,
        steps=args.warmup_steps + args.steps,
        device=device,
        dtype=dtype,
    )
    profile.disable()
    stats = pstats.Stats(profile).stats  # {(file, line, name): (calls, calls, own, cumulative, callers)}

    def cumulative(file_end, name):
        return sum(
            entry[3] for (file, _, function), entry in stats.items() if file.endswith(file_end) and function == name
        )

    loop = cumulative("transformers/trainer.py", "_run_epoch")
    inside = cumulative("training/pretrain_trainer.py", "training_step") + cumulative(
        "torch/optim/optimizer.py", "wrapper"
    )
    return (loop - inside) / loop


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=8192, help="nanochat's is 65536")
    parser.add_argument("--seq-len", type=int, default=256, help="nanochat's is 2048")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--steps", type=int, help="timed optimizer steps per variant (3) or per run (8, --compare)")
    parser.add_argument(
        "--compare", choices=["trainer"], help="trainer: NanoChatPretrainer vs a bare loop, both generations"
    )
    parser.add_argument("--warmup-steps", type=int, default=2, help="--compare: untimed steps before the timed ones")
    parser.add_argument("--repeats", type=int, default=2, help="--compare: runs of every path, alternating")
    parser.add_argument(
        "--attribute", action="store_true", help="--compare: also profile one Trainer run per generation"
    )
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="autocast dtype")
    parser.add_argument("--variants", nargs="+", choices=[*VARIANTS, "all"], help="default: see above")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.compare == "trainer":
        args.steps = 8 if args.steps is None else args.steps
        if args.warmup_steps < 1 or args.steps < 1 or args.repeats < 1:
            parser.error("--compare: --warmup-steps, --steps and --repeats must be at least 1")
        compare_trainer(args, torch.device(args.device), getattr(torch, args.dtype))
        return
    args.steps = 3 if args.steps is None else args.steps
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
