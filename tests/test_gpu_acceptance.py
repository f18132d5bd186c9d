"""`benchmarks/gpu_acceptance.py`: the CPU smoke pass runs every section's code and writes both reports."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch


REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_acceptance.py"


def test_quick_pass_runs_every_section_and_writes_json_and_markdown(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "acceptance.json").read_text())
    sections = report["sections"]
    assert list(sections) == [
        "gpu_tests",
        "offload_d32_gen1_12gb",
        "train_d20_gen1",
        "train_d24_gen2",
        "decode",
        "offload_d24_gen2_12gb",
    ]
    assert all(record["status"] in ("smoke", "not run") for record in sections.values()), sections
    assert sections["gpu_tests"]["targets"] == {"no failures": True}
    offload = sections["offload_d32_gen1_12gb"]
    assert offload["optimizer_step_s"] > 0 and offload["activations_measured_bytes"] > 0
    assert set(offload["targets"]) == {"overhead < 5%", "activations within 15% of the plan"}  # no cap on the CPU
    train = sections["train_d20_gen1"]
    assert train["tokens_per_s"] > 0 and train["mfu"] is None  # no BF16 peak for a CPU
    gen2 = sections["train_d24_gen2"]
    assert gen2["bf16_tokens_per_s"] > 0 and gen2["fp8"].startswith("not run")  # no FP8 tensor cores on a CPU
    offload_gen2 = sections["offload_d24_gen2_12gb"]
    assert offload_gen2["12gb_micro_step_s"] > 0 and offload_gen2["full_update_s"] > 0
    assert offload_gen2["planned_gpu_bytes"] > 0 and offload_gen2["planned_cpu_adamw_s"] > 0
    assert offload_gen2["targets"] == {}  # peak and plan are checked on a GPU only
    assert sections["decode"]["batch_1_tokens_per_s"] > 0 and sections["decode"]["batch_4_tokens_per_s"] > 0
    assert report["environment"]["device"] == "CPU" and report["quick"] is True
    markdown = (tmp_path / "acceptance.md").read_text()
    assert markdown.startswith("# GPU acceptance (quick smoke pass)")
    assert "| train_d20_gen1 | smoke |" in markdown
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary name, then renamed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_the_full_run_needs_a_gpu_and_says_so(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "needs a CUDA GPU" in result.stdout and "--quick" in result.stdout
    assert not (tmp_path / "acceptance.json").exists()


def test_a_bad_budget_is_refused_before_any_section_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path), "--only", "decode", "--budget-s", "-1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "--budget-s must be positive" in result.stdout
