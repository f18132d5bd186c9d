"""A toy RL task and a tiny SFT model that has learned its format, shared by the RL tests (real components).

The task: the user asks for a digit; the SFT data answers `#### d` with d uniform in 0..9, so the SFT model
answers in the right format with a random digit. The RL reward pays only for 7: about one sample in ten
earns it at first, and RL has to move the policy towards 7.
"""

import json
import random
from pathlib import Path

from chat_helpers import chat_args, save_tiny_model
from helpers import to_argv


QUESTIONS = ("Pick a digit.", "Say a digit.", "Give me a digit.", "Name a digit.")
REWARDED_DIGIT = "7"


def write_toy_data(folder: Path) -> tuple[Path, Path]:
    """(SFT conversations .jsonl, RL question/answer .jsonl)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    sft, rl = folder / "digits_sft.jsonl", folder / "digits_rl.jsonl"
    with open(sft, "w") as f:
        for _ in range(400):
            messages = [
                {"role": "user", "content": rng.choice(QUESTIONS)},
                {"role": "assistant", "content": f"#### {rng.randrange(10)}"},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    with open(rl, "w") as f:
        for question in QUESTIONS * 8:
            f.write(json.dumps({"question": question, "answer": REWARDED_DIGIT}) + "\n")
    return sft, rl


def toy_sft_model(folder: Path) -> tuple[Path, Path]:
    """(a tiny chat model fine-tuned on the toy format, the RL problems file)."""
    from nanochat_hf.training.sft import run_sft

    sft_data, rl_data = write_toy_data(folder / "data")
    base = save_tiny_model(folder / "base", chat=False)
    final = run_sft(
        *chat_args(
            folder / "sft",
            base,
            dataset_mixture=str(sft_data),
            max_steps=40,
            init_lr_frac=1.0,
            packing=False,
            max_length=32,
            per_device_train_batch_size=16,
        )
    )
    return final, rl_data


def rl_args(output_dir, model, dataset, **overrides):
    """(RLArguments, NanoChatGRPOConfig, ModelConfig) of a tiny CPU RL run; `overrides` as on the command line."""
    from nanochat_hf.training.rl_arguments import parse_rl_arguments

    settings = {
        "model_name_or_path": str(model),
        "dataset": str(dataset),
        "output_dir": str(output_dir),
        "num_generations": 8,
        "examples_per_step": 2,
        "per_device_train_batch_size": 8,
        "max_completion_length": 16,
        "max_steps": 3,
        "use_cpu": True,
        "bf16": False,
        "dtype": "float32",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": 0,
    }
    settings.update(overrides)
    return parse_rl_arguments(to_argv(settings))
