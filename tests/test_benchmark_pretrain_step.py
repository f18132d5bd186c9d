"""`benchmarks/pretrain_step.py --compare trainer`: its bare loops are the Trainer's math, step for step.

The benchmark's Trainer overhead is only meaningful if each bare PyTorch loop computes what
`NanoChatPretrainer` computes. Here both run 3 optimizer steps at a tiny shape and must give the same
per-step losses (the Trainer logs each step's loss, the sum of its loss / accumulation micro-losses, as
the bare loop reports it). The rows use 8 token ids only, so the model learns fast and the LR visibly
moves the loss: a bare loop that skipped its schedule (the LR warm-up) would differ from step 3 on, which
the second test checks. No timing is asserted anywhere.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
from torch.optim.lr_scheduler import LambdaLR

from nanochat_hf import NanoChatHFConfig


pytestmark = pytest.mark.usefixtures("one_cpu_thread")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SHAPE = dict(micro_batch=2, grad_accum=2, steps=3)
SEQ = 16


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("pretrain_step", BENCHMARKS / "pretrain_step.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCHMARKS))  # the benchmark imports its sibling `measure`
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def tiny_config(generation):
    return NanoChatHFConfig(
        generation=generation, n_layer=2, n_embd=64, n_head=2, n_kv_head=2, vocab_size=256, sequence_len=SEQ
    )


def tiny_rows(bench):
    steps = SHAPE["micro_batch"] * SHAPE["grad_accum"] * SHAPE["steps"]
    return bench.random_rows(steps, SEQ, vocab_size=8)  # ids 0..7 of 256: a quickly learnt distribution


@pytest.mark.parametrize("generation", [2, 1])
def test_the_bare_loop_gives_the_trainers_losses(bench, generation):
    config, rows = tiny_config(generation), tiny_rows(bench)
    trainer_losses, trainer_ends = bench.trainer_run(config, rows, **SHAPE)
    bare_losses, bare_ends = bench.bare_run(config, rows, **SHAPE)
    assert len(trainer_losses) == len(bare_losses) == len(trainer_ends) == len(bare_ends) == SHAPE["steps"]
    assert bare_losses == pytest.approx(trainer_losses, rel=1e-5)
    assert trainer_losses[-1] < trainer_losses[0] - 1e-3  # the steps trained something


@pytest.mark.parametrize("generation", [2, 1])
def test_a_bare_loop_without_the_schedule_would_be_caught(bench, generation, monkeypatch):
    config, rows = tiny_config(generation), tiny_rows(bench)
    reference, _ = bench.bare_run(config, rows, **SHAPE)
    initial_step = LambdaLR.step

    def first_call_only(self, *args):  # LambdaLR steps once as it is built (setting the first LR)
        if not getattr(self, "stepped", False):
            self.stepped = True
            initial_step(self, *args)

    monkeypatch.setattr(LambdaLR, "step", first_call_only)
    frozen, _ = bench.bare_run(config, rows, **SHAPE)
    assert frozen[:2] == pytest.approx(reference[:2], rel=1e-5)  # update 1 runs at the first LR either way
    assert abs(frozen[2] - reference[2]) > 20 * 1e-5 * reference[2]  # far outside the tolerance above


def test_compare_trainer_prints_the_overhead_of_both_generations(bench, capsys):
    bench.main(
        ["--compare", "trainer", "--depth", "1", "--vocab-size", "256", "--seq-len", str(SEQ), "--micro-batch", "2"]
        + ["--grad-accum", "2", "--warmup-steps", "1", "--steps", "1", "--repeats", "1", "--device", "cpu"]
        + ["--attribute"]
    )
    out = capsys.readouterr().out
    assert "Trainer overhead: " in out and "% (generation 2), " in out and "% (generation 1)" in out
    for generation in (2, 1):
        assert f"generation {generation}: Trainer / bare" in out
        share = out.split(f"generation {generation}: ")[-1].split(" % of the Trainer's epoch loop")[0]
        assert 0 < float(share) < 100  # the profile found the epoch loop and the steps inside it
