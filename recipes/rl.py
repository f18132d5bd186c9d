"""Reinforcement learning of a chat model on GSM8K with trl's GRPOTrainer (nanochat's chat_rl).

    python recipes/rl.py --config recipes/configs/rl_cpu_quickstart.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/rl.py \
        --config recipes/configs/rl_d32_8xh100.yaml
    python recipes/rl.py --config recipes/configs/rl_d32_lora_rtx4070.yaml     # one 12 GB GPU

From an SFT chat model (ours, converted from nanochat, or a Hub id): per question `num_generations` samples
through the chat engine's calculator tool loop, reward = the exact final answer, advantage = reward - the
question's mean, the forced tool output masked out of the loss. Any YAML field
(nanochat_hf.training.rl_arguments.RLArguments, NanoChatGRPOConfig = trl.GRPOConfig with nanochat's defaults,
trl.ModelConfig) can be overridden: `--model_name_or_path runs/d32-sft/final --max_steps 100`.
The result is output_dir/final: a chat model (`nanochat-hf chat output_dir/final`), or with use_peft a
LoRA adapter (`nanochat-hf merge-lora`).
"""

import logging
import sys

from nanochat_hf.errors import run_reporting_errors
from nanochat_hf.training.rl import run_rl
from nanochat_hf.training.rl_arguments import parse_rl_arguments


def main(argv=None, default_config: str | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)

    def rl():
        args, training_args, model_args = parse_rl_arguments(sys.argv[1:] if argv is None else argv, default_config)
        final_dir = run_rl(args, training_args, model_args)
        print(f"chat model written to {final_dir}")

    return run_reporting_errors(rl, "rl")


if __name__ == "__main__":
    sys.exit(main())
