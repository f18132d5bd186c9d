"""`benchmarks/gpu_wheels.sh`: the offline GPU machine's wheel list, and this package's own wheel (no network)."""

import importlib.metadata as md
import subprocess
from pathlib import Path


SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_wheels.sh"


def run(*args):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_the_list_pins_what_a_torch_and_transformers_machine_lacks():
    result = run("--list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    pinned = dict(line.split("==") for line in lines if "==" in line)
    for needed in ("trl", "accelerate", "datasets", "evaluate", "peft", "bitsandbytes", "tiktoken", "pytest"):
        assert pinned[needed] == md.version(needed)  # the versions installed (and tested) here
    assert "torchao" in lines  # FP8 on the GPU
    # What the GPU machine brings: torch and transformers with their own dependencies (CUDA wheels are GBs).
    for preinstalled in ("torch", "transformers", "tokenizers", "huggingface-hub", "safetensors", "numpy"):
        assert preinstalled not in pinned
    assert "lm-eval" not in pinned and "ruff" not in pinned  # not used by the acceptance run


def test_self_only_builds_this_packages_wheel_offline(tmp_path):
    result = run("--self-only", "--dest", str(tmp_path))
    assert result.returncode == 0, result.stderr
    [wheel] = tmp_path.glob("nanochat_hf-*.whl")
    assert wheel.stat().st_size > 10_000


def test_unknown_options_are_refused_with_the_expected_ones():
    result = run("--platfrom", "x")
    assert (
        result.returncode == 2 and "unknown option '--platfrom'" in result.stderr and "--platform TAG" in result.stderr
    )
