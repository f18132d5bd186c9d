"""Thread count of CPU runs: the idle cores, shared by the processes; OMP_NUM_THREADS decides when set."""

import pytest
import torch

from nanochat_hf.cpu_threads import available_cores, busy_cores, choose_cpu_threads, set_cpu_threads, threads_for


@pytest.mark.parametrize(
    "cores, busy, processes, expected",
    [
        (2, 0.1, 1, 2),  # an idle machine: every core
        (2, 1.2, 1, 1),  # one core busy elsewhere
        (2, 9.0, 1, 1),  # overloaded: still one
        (2, 0.0, 2, 1),  # two processes share two cores
        (16, 4.0, 2, 6),  # 12 idle cores for two processes
        (16, 0.0, 1, 16),
        (4, 0.0, 8, 1),  # more processes than cores
    ],
)
def test_threads_are_the_idle_cores_shared_by_the_processes(cores, busy, processes, expected):
    assert threads_for(cores, busy, processes) == expected


def test_omp_num_threads_decides_when_set(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_cpu_threads() == (3, "OMP_NUM_THREADS")


def test_without_omp_num_threads_the_machine_is_sampled(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads, why = choose_cpu_threads()
    assert 1 <= threads <= available_cores()
    assert f"{available_cores()} cores" in why and "OMP_NUM_THREADS" in why
    assert 0 <= busy_cores(0.05) <= available_cores() + 0.5


def test_set_cpu_threads_sets_torch_and_says_so(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    said = []
    try:
        assert set_cpu_threads(announce=said.append) == 1
        assert torch.get_num_threads() == 1
        assert said == ["CPU threads: 1 (OMP_NUM_THREADS)"]
    finally:
        torch.set_num_threads(before)
