"""nanochat's own generation-2 model (`nanochat/gpt.py` at the newest commit of the local mirror), for parity tests.

The mirror is a bare git repository; its files are written to a temporary folder with `git show` and imported
from there. Where the mirror (or git) is absent, `nanochat_gpt()` returns None and the tests that need it skip;
the per-feature tests in tests/test_modeling_gen2_*.py run everywhere.
"""

import functools
import importlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


MIRROR = Path("/work/.mirror/karpathy+nanochat/repo")
FILES = ("__init__.py", "common.py", "optim.py", "flash_attention.py", "gpt.py")
# nanochat keeps these at the top level of its GPT; this package keeps them in the trunk (`transformer.`).
TOP_LEVEL_STEMS = ("resid_lambdas", "x0_lambdas", "smear_gate", "smear_lambda", "backout_lambda", "value_embeds")


@functools.lru_cache(maxsize=1)
def nanochat_gpt():
    """The imported `nanochat.gpt` module, or None when nanochat's source is not available here."""
    if not MIRROR.exists() or shutil.which("git") is None:
        return None
    root = Path(tempfile.mkdtemp(prefix="nanochat-src-"))
    (root / "nanochat").mkdir()
    for name in FILES:
        result = subprocess.run(
            ["git", "-C", str(MIRROR), "show", f"HEAD:nanochat/{name}"], capture_output=True, timeout=60
        )
        if result.returncode != 0:
            return None
        (root / "nanochat" / name).write_bytes(result.stdout)
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("nanochat.gpt")
    except ImportError:
        return None
    finally:
        sys.path.remove(str(root))


def to_hf_state_dict(nanochat_state_dict: dict) -> dict:
    """nanochat's names -> this package's (the generation-2 extras move under `transformer.`)."""
    return {
        (f"transformer.{key}" if key.split(".")[0] in TOP_LEVEL_STEMS else key): value
        for key, value in nanochat_state_dict.items()
    }


def randomize_gen2_(model, seed: int = 0, scale: float = 0.3):
    """Random non-trivial weights in nanochat's names or ours: matrices and tables N(0, scale), and every
    generation-2 scalar and gate away from its initial value (resid ~ 1, x0, smear and backout clearly non-zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            stem = name.split(".")[-1] if name.split(".")[-1] != "weight" else name.split(".")[-2]
            if stem == "resid_lambdas":
                param.copy_(1.0 + 0.2 * noise)
            elif stem in ("x0_lambdas", "backout_lambda"):
                param.copy_(0.3 + 0.1 * noise)
            elif stem == "smear_lambda":
                param.copy_(0.7 + 0.1 * noise)
            elif stem in ("ve_gate", "smear_gate"):
                param.copy_(noise)
            else:
                param.copy_(noise * scale)
    return model
