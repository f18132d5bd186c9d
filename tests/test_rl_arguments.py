"""RL settings: nanochat's defaults on trl's GRPOConfig, the shipped configs, and the batch arithmetic."""

from pathlib import Path

import pytest

from nanochat_hf.errors import UserInputError
from nanochat_hf.training.rl import settle_batch
from nanochat_hf.training.rl_arguments import accumulation_for, parse_rl_arguments


CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


def test_defaults_are_nanochats():
    args, grpo, model = parse_rl_arguments(["--model_name_or_path", "m", "--output_dir", "out", "--use_cpu", "true"])
    assert (grpo.num_generations, grpo.max_completion_length, grpo.temperature, grpo.top_k) == (16, 256, 1.0, 50)
    assert (grpo.beta, grpo.scale_rewards, grpo.loss_type, grpo.num_iterations) == (0.0, "none", "bnpo", 1)
    assert grpo.per_device_train_batch_size == 8
    assert (grpo.examples_per_step, args.init_lr_frac, args.warmdown_ratio, args.eval_size) == (16, 0.05, 1.0, 400)
    assert args.dataset == "gsm8k"
    settle_batch(grpo)  # one process: 16 questions x 16 samples in passes of 8
    assert grpo.gradient_accumulation_steps == grpo.steps_per_generation == 32
    assert grpo.generation_batch_size == 256


@pytest.mark.parametrize(
    "config, expected",
    [
        ("rl_d32_8xh100.yaml", {"optimizer": "nanochat", "per_device_train_batch_size": 8, "num_generations": 16}),
        ("rl_d32_lora_rtx4070.yaml", {"optimizer": "trainer", "per_device_train_batch_size": 4, "use_peft": True}),
        ("rl_cpu_quickstart.yaml", {"optimizer": "nanochat", "num_generations": 8, "dataset": "arithmetic"}),
    ],
)
def test_shipped_configs_parse(config, expected):
    parsed = parse_rl_arguments(["--config", str(CONFIGS / config), "--use_cpu", "true", "--bf16", "false"])
    values = {key: getattr(next(p for p in parsed if hasattr(p, key)), key) for key in expected}
    assert values == expected
    grpo = parsed[1]
    settle_batch(grpo)
    assert grpo.generation_batch_size == grpo.examples_per_step * grpo.num_generations


@pytest.mark.parametrize("processes, accumulation", [(1, 32), (2, 16), (8, 4)])
def test_examples_per_step_gives_the_accumulation_for_the_process_count(processes, accumulation):
    # nanochat's 16 questions x 16 samples in passes of 8 sequences per process.
    assert accumulation_for(16, 16, 8, processes) == accumulation
    with pytest.raises(UserInputError, match="256 samples per step is not a multiple of"):
        accumulation_for(16, 16, 24, processes)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--optimizer", "adam"], "--optimizer 'adam': expected one of"),
        (["--examples_per_step", "-1"], "--examples_per_step must be >= 0"),
        (
            ["--examples_per_step", "3", "--per_device_train_batch_size", "32"],
            "--examples_per_step 3 x --num_generations 16",
        ),
        (["--format_reward_weight", "-1"], "--format_reward_weight must be >= 0"),
        (["--num_generations", "3", "--examples_per_step", "0"], "GRPO settings: generation_batch_size"),
        (["--num_generations", "1"], "GRPO settings: GRPO requires at least 2 generations"),
    ],
)
def test_bad_settings_are_refused(argv, message):
    with pytest.raises(UserInputError, match=message):
        parse_rl_arguments(["--model_name_or_path", "m", "--output_dir", "out", "--use_cpu", "true", *argv])
