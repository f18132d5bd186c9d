"""nanochat d32 (1.9B parameters): `accelerate launch recipes/pretrain_d32.py [--config other.yaml] [--key value ...]`.

Without --config it uses recipes/configs/pretrain_d32_rtx4070.yaml (one 12 GB card); for a node of 8 GPUs use
`--config recipes/configs/pretrain_d32_8xh100.yaml` with accelerate_configs/multi_gpu.yaml.
"""

import sys
from pathlib import Path

from pretrain import main


if __name__ == "__main__":
    sys.exit(main(default_config=str(Path(__file__).parent / "configs" / "pretrain_d32_rtx4070.yaml")))
