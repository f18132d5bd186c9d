"""GPT-2 grade in one recipe: nanochat's 2026 d24 (generation 2) at 8 tokens per scaling parameter.

    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/pretrain_gpt2.py   # 8 x H100
    python recipes/pretrain_gpt2.py --dry_run true           # the plan: groups, batch, steps, tokens, FLOPs
    python recipes/pretrain_gpt2.py --config recipes/configs/pretrain_gpt2_cpu_quickstart.yaml   # CPU, minutes

nanochat's "time to GPT-2" speedrun (CORE 0.2565, GPT-2 XL's score) trains this model in 1.65 h on 8 x H100:
~5.8 B tokens in 5,568 updates of 1,048,576 tokens. Without --config it uses
recipes/configs/pretrain_gpt2_8xh100.yaml; every field can be overridden on the command line.
"""

import sys
from pathlib import Path

from pretrain import main


if __name__ == "__main__":
    sys.exit(main(default_config=str(Path(__file__).parent / "configs" / "pretrain_gpt2_8xh100.yaml")))
