"""Midtraining of a nanochat base model (nanochat generation 1's scripts/mid_train.py) with trl's SFTTrainer.

    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/midtrain.py \
        --config recipes/configs/midtrain_d32_8xh100.yaml

Midtraining teaches the base model the chat format, multiple choice and tool use on a large mixture
(SmolTalk, MMLU auxiliary train, GSM8K with calculator calls, identity and spelling tasks), training on
every token of conversations packed into a stream, with the base run's learning rates. SFT follows
(recipes/sft.py). Fields are those of recipes/sft.py with `stage: mid`.
"""

import sys

from sft import main as sft_main


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(arg.split("=")[0] == "--stage" for arg in argv):
        argv += ["--stage", "mid"]
    return sft_main(argv)


if __name__ == "__main__":
    sys.exit(main())
