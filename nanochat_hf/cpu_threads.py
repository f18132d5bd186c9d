"""How many threads torch uses for a training run on the CPU: the cores that are free, shared by the processes.

torch starts one thread per core. When other programs keep those cores busy, its threads wait on each
other at every parallel region: measured on the 2-core CPU sandbox under load (load average ~10), a
quickstart micro-step took 2.2 s with 1 thread against 10 s with 2 (`benchmarks/cpu_threads.py` measures
it on any machine). So a CPU run takes the cores that are idle right now, sampled over half a second
while this process waits (a load average would still count this process's own earlier stage), split
between the run's processes, at least 1 each. `OMP_NUM_THREADS`, when set, decides instead.
"""

import logging
import os

import psutil
import torch


logger = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.5


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def busy_cores(sample_seconds: float = SAMPLE_SECONDS) -> float:
    """Cores kept busy by other work: the machine's CPU use over `sample_seconds`, while this process waits."""
    return psutil.cpu_percent(interval=sample_seconds) / 100 * (psutil.cpu_count() or 1)


def threads_for(cores: int, busy: float, processes: int = 1) -> int:
    """Threads per process: the idle cores (rounded), shared by `processes`, within 1 .. cores // processes."""
    per_process = max(1, cores // max(1, processes))
    idle = max(0.0, cores - busy)
    return max(1, min(per_process, int(idle / max(1, processes) + 0.5)))


def choose_cpu_threads(processes: int = 1) -> tuple[int, str]:
    """(threads, why) for one process of a CPU run of `processes` processes."""
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    cores, busy = available_cores(), busy_cores()
    threads = threads_for(cores, busy, processes)
    share = f", {processes} processes" if processes > 1 else ""
    why = f"{cores} cores, {busy:.1f} busy with other work{share}; set OMP_NUM_THREADS to choose"
    return threads, why


def set_cpu_threads(processes: int = 1, announce=print) -> int:
    """Choose and set torch's thread count for a CPU run; says what it chose (`announce`)."""
    threads, why = choose_cpu_threads(processes)
    torch.set_num_threads(threads)
    announce(f"CPU threads: {threads} ({why})")
    return threads


def set_training_cpu_threads(training_args, logger) -> int | None:
    """What every training stage does before building its model: on a CPU run, choose and set the threads of
    this process (one of `training_args.world_size`); the main process prints the choice, the others log it."""
    if training_args.device.type != "cpu":
        return None
    announce = print if training_args.process_index == 0 else logger.info
    return set_cpu_threads(training_args.world_size, announce=announce)
