"""Supervised fine-tuning of a nanochat model into a chat model with trl's SFTTrainer.

A generation-1 model follows nanochat generation 1 (after recipes/midtrain.py); a generation-2 base model
gets nanochat 2026's single stage (its mixture, settings inherited from pretraining, the generation-2 optimizer).

    python recipes/sft.py --config recipes/configs/sft_cpu_quickstart.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/sft.py \
        --config recipes/configs/sft_d32_8xh100.yaml
    python recipes/sft.py --config recipes/configs/sft_d32_qlora_rtx4070.yaml     # one 12 GB GPU
    python recipes/sft.py --config recipes/configs/sft_gpt2_cpu_quickstart.yaml   # generation 2, CPU
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/sft.py \
        --config recipes/configs/sft_gpt2_8xh100.yaml                           # generation 2 (d24), 8 x H100

Any YAML field (nanochat_hf.training.sft_arguments.ChatTrainingArguments, trl.SFTConfig, trl.ModelConfig) can be overridden
on the command line: `--model_name_or_path runs/d20-mid/final --max_steps 100`.
The result is output_dir/final: a chat model (or, with use_peft, a LoRA adapter: merge it with
`nanochat-hf merge-lora`). Talk to it with `nanochat-hf chat output_dir/final`.
"""

import logging
import sys

from nanochat_hf.errors import run_reporting_errors
from nanochat_hf.training.sft import run_sft, written_message
from nanochat_hf.training.sft_arguments import parse_chat_arguments


def main(argv=None, default_config: str | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)

    def sft():
        args, training_args, model_args = parse_chat_arguments(sys.argv[1:] if argv is None else argv, default_config)
        final_dir = run_sft(args, training_args, model_args)
        print(written_message(final_dir))

    return run_reporting_errors(sft, "sft")


if __name__ == "__main__":
    sys.exit(main())
