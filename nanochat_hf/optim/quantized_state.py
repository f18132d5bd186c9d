"""8-bit blockwise storage for an optimizer state tensor (Muon's momentum), with bitsandbytes' quantiser.

The layout is the one the planner counts (`nanochat_hf/planning/memory_modes.py` and `planning/memory.py`):
one uint8 code per value, one fp32 absmax per block of `QUANT_BLOCK_SIZE` (256) values, and one 256-entry
fp32 code book (bitsandbytes' signed dynamic map) shared by every tensor. Tensors under `MIN_8BIT_NUMEL`
(4,096) values stay in fp32, as bitsandbytes' own 8-bit optimizers keep them.

Why the momentum tolerates 8 bits: each step reads the buffer (dequantise), decays it and adds the new
gradient in fp32, and stores it again (quantise); a rounding error made at one step is multiplied by μ
at every later one, so errors do not pile up, and Newton-Schulz only keeps the direction of the update.
`tests/test_memory_knobs.py` checks the update stays within tolerance of fp32 momentum over many steps.

bitsandbytes' `quantize_blockwise` / `dequantize_blockwise` run on CUDA and on the CPU (bitsandbytes >= 0.45);
the import is lazy so that modes without 8-bit state do not need bitsandbytes at all.
"""

import math

import torch

from ..errors import UserInputError
from ..planning.memory_modes import MIN_8BIT_NUMEL, QUANT_BLOCK_SIZE


def bitsandbytes_functional():
    try:
        import bitsandbytes.functional as bnb_functional
    except ImportError as err:
        raise UserInputError(
            f"8-bit optimizer state needs bitsandbytes (pip install 'nanochat-hf[quant]'); import failed: {err}"
        ) from None
    return bnb_functional


def is_quantized(numel: int) -> bool:
    """Whether a state tensor of `numel` values is stored in 8 bits (small ones stay fp32)."""
    return numel >= MIN_8BIT_NUMEL


def signed_dynamic_code(device: torch.device) -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic map: 256 fp32 values, the code book of every quantised tensor."""
    return bitsandbytes_functional().create_dynamic_map(signed=True).to(device)


def empty_quantized(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, absmax) that decode to zeros, for a tensor shaped like `like`."""
    codes = torch.zeros(like.shape, dtype=torch.uint8, device=like.device)
    absmax = torch.zeros(math.ceil(like.numel() / QUANT_BLOCK_SIZE), dtype=torch.float32, device=like.device)
    return codes, absmax


def dequantize(codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """The fp32 values stored in (codes, absmax)."""
    bnb_functional = bitsandbytes_functional()
    return bnb_functional.dequantize_blockwise(codes, absmax=absmax, code=code, blocksize=QUANT_BLOCK_SIZE)


def quantize_into(values: torch.Tensor, codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor) -> None:
    """Store `values` in the existing (codes, absmax) tensors, in place."""
    bnb_functional = bitsandbytes_functional()
    bnb_functional.quantize_blockwise(values, code=code, absmax=absmax, out=codes, blocksize=QUANT_BLOCK_SIZE)
