"""nanochat d21 (width 1408, 11 heads): `accelerate launch recipes/pretrain_d21.py [--key value ...]`.

Without --config it uses recipes/configs/pretrain_d21_rtx4070.yaml.
"""

import sys
from pathlib import Path

from pretrain import main


if __name__ == "__main__":
    sys.exit(main(default_config=str(Path(__file__).parent / "configs" / "pretrain_d21_rtx4070.yaml")))
