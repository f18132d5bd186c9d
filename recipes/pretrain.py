"""Pretrain a nanochat base model with the Hugging Face Trainer (nanochat generation-1 recipe).

    python recipes/pretrain.py --config recipes/configs/pretrain_cpu_quickstart.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/pretrain.py \
        --config recipes/configs/pretrain_d32_8xh100.yaml
    python recipes/pretrain.py --config recipes/configs/pretrain_d32_rtx4070.yaml --dry_run true

Any field of the YAML (nanochat_hf.training.PretrainArguments or PretrainTrainingArguments, which are
transformers' TrainingArguments with an optional micro-batch and `dry_run`) can be
overridden on the command line: `--depth 12 --max_steps 100 --output_dir runs/try`.
Resume after a crash with `--resume_from_checkpoint last` (or a checkpoint folder).
"""

import logging
import sys

from nanochat_hf.errors import run_reporting_errors
from nanochat_hf.training import parse_pretrain_arguments, run_pretraining


def main(argv=None, default_config: str | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)

    def pretrain():
        args, training_args = parse_pretrain_arguments(sys.argv[1:] if argv is None else argv, default_config)
        run_pretraining(args, training_args)

    return run_reporting_errors(pretrain, "pretrain")


if __name__ == "__main__":
    sys.exit(main())
