"""Wall and CPU time of each stage of the CPU quickstart (recipes/quickstart.py), on this machine.

    python benchmarks/quickstart_time.py                 # threads as the quickstart chooses them
    python benchmarks/quickstart_time.py --threads 1     # CPU time = the wall time on one idle core

Runs the quickstart's own stage functions in a fresh folder (nothing reused): tokenizer training,
pretraining (with its validation bpb and samples), SFT, one chat answer, CORE on the embedded bundle and
the report card. Prints per stage the wall seconds, the process's CPU seconds (all its threads) and
their ratio, with the machine's core count and load average before and after: on a machine busy with
other work the wall time is the CPU time stretched by the contention; with one thread on an idle core
the two agree.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes"))  # the quickstart recipe's stage functions

import quickstart  # noqa: E402
import torch  # noqa: E402

from nanochat_hf.cpu_threads import available_cores  # noqa: E402
from nanochat_hf.training import parse_pretrain_arguments  # noqa: E402
from nanochat_hf.training.pretrain import load_or_train_tokenizer  # noqa: E402


class Stopwatch:
    def __init__(self):
        self.rows = []

    def time(self, name, function, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function(*args)
        self.rows.append((name, time.perf_counter() - wall, time.process_time() - cpu))
        print(f"=== {name}: {self.rows[-1][1]:.0f} s wall, {self.rows[-1][2]:.0f} s CPU", flush=True)
        return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the run (default: the quickstart's choice)")
    parser.add_argument("--output-root", help="where the runs go (default: a temporary folder, removed after)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="quickstart-time-") as scratch:
        root = Path(args.output_root or scratch)
        pretrain_overrides, sft_overrides, _ = quickstart.stage_overrides(root)
        load_before = os.getloadavg()
        clock = Stopwatch()
        pretrain_args, training_args = parse_pretrain_arguments(
            ["--config", str(quickstart.PRETRAIN_CONFIG), *pretrain_overrides]
        )
        clock.time("tokenizer", load_or_train_tokenizer, pretrain_args, training_args.output_dir, True)
        base = clock.time("pretraining", quickstart.pretrain_stage, pretrain_overrides)
        chat_model = clock.time("SFT", quickstart.sft_stage, base, sft_overrides)
        clock.time("answer", quickstart.answer_stage, chat_model, quickstart.DEFAULT_PROMPT)
        clock.time("CORE and report", quickstart.core_stage, base)
        load_after = os.getloadavg()

    print(
        f"\nquickstart on {available_cores()} cores, torch threads {torch.get_num_threads()}, "
        f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    print(f"  {'stage':<18} {'wall s':>8} {'CPU s':>8} {'wall/CPU':>9}")
    for name, wall, cpu in clock.rows:
        print(f"  {name:<18} {wall:>8.0f} {cpu:>8.0f} {wall / max(cpu, 1e-9):>9.2f}")
    wall, cpu = sum(row[1] for row in clock.rows), sum(row[2] for row in clock.rows)
    print(f"  {'total':<18} {wall:>8.0f} {cpu:>8.0f} {wall / max(cpu, 1e-9):>9.2f}  ({wall / 60:.1f} min wall)")


if __name__ == "__main__":
    main()
