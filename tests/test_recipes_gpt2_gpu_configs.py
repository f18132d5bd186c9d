"""The GPT-2 recipe's single-GPU configs: generation 2's d24 on an RTX 4070 (12gb) and an RTX 4090 (24gb).

Each config is parsed by the recipe's own parser and planned as the run plans it (the run's knob overrides,
its micro-batch, its GPU): the memory mode it names must fit its card, FP8 only where the card has FP8
tensor cores, and the dry run of `recipes/pretrain_gpt2.py --config <it>` prints the d24 numbers and the
chosen memory mode without starting any work.
"""

import importlib.util
import re
from pathlib import Path

import pytest

from nanochat_hf.planning.flops import ModelShape
from nanochat_hf.planning.gpus import GIB, get_gpu
from nanochat_hf.planning.plan import make_plan
from nanochat_hf.training import parse_pretrain_arguments
from nanochat_hf.training.memory import knob_overrides
from nanochat_hf.training.pretrain import resolve_model_config


REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
# config -> (card, memory mode, micro-batch, planned GPU GiB, planned CPU RAM GiB)
GPU_CONFIGS = {
    "pretrain_gpt2_rtx4070.yaml": ("rtx4070", "12gb", 2, 11.66, 10.21),
    "pretrain_gpt2_rtx4090.yaml": ("rtx4090", "24gb", 4, 22.68, 10.66),
}


def planned(config_name: str):
    # As a dry run parses it: on a machine without the GPU, bf16 is planned, not checked.
    args, training_args = parse_pretrain_arguments(["--config", str(CONFIGS / config_name), "--dry-run"])
    config = resolve_model_config(args, vocab_size=args.tokenizer_vocab_size)
    plan = make_plan(
        gpu=args.gpu,
        generation=args.generation,
        target_param_data_ratio=args.target_param_data_ratio,
        memory_mode=args.memory_mode,
        knob_overrides=knob_overrides(args, training_args),
        shape=ModelShape.from_config(config),
    )
    return args, plan


@pytest.mark.parametrize("config_name", sorted(GPU_CONFIGS))
def test_each_gpu_config_fits_its_card_in_its_mode(config_name):
    card, mode, micro_batch, gpu_gib, cpu_gib = GPU_CONFIGS[config_name]
    args, plan = planned(config_name)
    assert args.generation == 2 and args.tokenizer_vocab_size == 32768 and args.target_param_data_ratio == 8
    assert plan.gpu.key == card and plan.depth == 24 and plan.params.total == 1_384_122_122
    assert (plan.horizon.steps, plan.horizon.total_batch_size) == (5_568, 1_048_576)
    assert plan.memory.mode == mode and plan.memory.micro_batch == micro_batch and plan.fits
    assert plan.memory.total / GIB == pytest.approx(gpu_gib, abs=0.01)
    assert plan.memory.static.cpu_total / GIB == pytest.approx(cpu_gib, abs=0.01)
    assert args.fp8 and plan.gpu.supports_fp8
    assert not get_gpu("rtx3090").supports_fp8  # the 4090 config's note: a 3090 runs it with fp8: false


def load_gpt2_recipe():
    spec = importlib.util.spec_from_file_location("pretrain_recipe", REPO / "recipes" / "pretrain.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe


@pytest.mark.parametrize("config_name", sorted(GPU_CONFIGS))
def test_dry_run_prints_the_d24_numbers_and_the_memory_mode(config_name, tmp_path, monkeypatch, capsys):
    _, mode, micro_batch, _, _ = GPU_CONFIGS[config_name]
    monkeypatch.chdir(tmp_path)  # the config's relative tokenizer folder is absent: its 32,768 tokens are assumed
    recipe = load_gpt2_recipe()
    # What `python recipes/pretrain_gpt2.py --config <it> --dry-run` runs.
    argv = ["--config", str(CONFIGS / config_name), "--dry-run"]
    code = recipe.main(argv, default_config=str(CONFIGS / "pretrain_gpt2_8xh100.yaml"))
    assert code == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    for pattern in (
        r"parameters\s+1,384,122,122",
        r"steps\s+5,568",
        r"total_tokens\s+5,838,471,168",
        rf"micro_batch\s+{micro_batch}",
        rf"mode\s+{mode}",
    ):
        assert any(re.fullmatch(pattern, line) for line in lines), pattern
    assert not (tmp_path / "runs").exists()
