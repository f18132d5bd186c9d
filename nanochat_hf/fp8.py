"""FP8 training matmuls: torchao's float8 training (through accelerate), for both model generations.

The recipe is nanochat's: tensorwise dynamic scaling (one scale per tensor, from its amax at every call),
inputs and weights in float8_e4m3fn, output gradients in float8_e5m2, fast accumulation in the forward
matmul only. torchao's `Float8Linear` (`Float8LinearConfig.from_recipe_name("tensorwise")`) is exactly
that recipe, is maintained by the PyTorch team and is written to be traced by `torch.compile`.

- `check_fp8_support(device)`: compute capability >= 8.9 (FP8 tensor cores: RTX 40xx, H100/H200) and
  torchao, else a `UserInputError` naming `--fp8`; the recipe calls it before the data or model is built.
- `fp8_module_names(model)`: the Linear layers that get FP8 matmuls (`fp8_module_filter` per layer).
  Generation 1: every Linear whose dims are divisible by 16 except `lm_head`. Generation 2 (nanochat
  2026): every Linear whose dims are divisible by 16 and at least 128, which is nanochat's own filter: the
  attention and MLP matrices and `lm_head` are converted; the value-embedding gates (12 -> n_kv_head) and
  the smear gate (24 -> 1) are too small; value embeddings and `wte` are embeddings, never converted.
- `enable_fp8(model)`: swaps exactly those layers for torchao's `Float8Linear` (weights shared, not copied).
- `fp8_disabled(model)`: evaluation in bf16. Inside it the FP8 layers are plain `nn.Linear`s sharing the
  same weights; they are put back on exit. The validation, CORE and sample callbacks evaluate inside it.
"""

import importlib.util
import sys
from contextlib import contextmanager

import torch
from torch import nn

from .errors import UserInputError


FP8_MIN_CAPABILITY = (8, 9)
FP8_RECIPE = "tensorwise"
GEN2_MIN_FP8_DIM = 128  # nanochat 2026: smaller matmuls gain nothing from FP8


def check_fp8_support(device: torch.device) -> None:
    """FP8 matmuls need FP8 tensor cores (compute capability >= 8.9: RTX 40xx, H100) and torchao."""
    device = torch.device(device)
    if device.type != "cuda":
        raise UserInputError(
            f"--fp8 needs a CUDA GPU with compute capability >= {'.'.join(map(str, FP8_MIN_CAPABILITY))} "
            f"(FP8 tensor cores: RTX 40xx, H100 and newer); this run is on the {device.type.upper()}, which has none"
        )
    index = device.index if device.index is not None else torch.cuda.current_device()
    capability = torch.cuda.get_device_capability(index)
    if capability < FP8_MIN_CAPABILITY:
        raise UserInputError(
            f"--fp8 needs compute capability >= {'.'.join(map(str, FP8_MIN_CAPABILITY))}; "
            f"{torch.cuda.get_device_name(index)} (cuda:{index}) has {capability[0]}.{capability[1]} and no FP8 "
            "tensor cores. Train in bf16 (drop --fp8)"
        )
    if importlib.util.find_spec("torchao") is None:
        raise UserInputError(
            "--fp8 uses torchao's float8 training through accelerate: pip install torchao (or nanochat-hf[fp8])"
        )


def fp8_module_filter(module: nn.Module, fqn: str, generation: int = 1) -> bool:
    """Whether the Linear `module` (at `fqn`) gets FP8 matmuls; the dims must be divisible by 16 (the FP8
    kernels need it). Generation 1 keeps `lm_head` in bf16; generation 2 follows nanochat 2026: both dims
    at least 128, `lm_head` included."""
    if not isinstance(module, nn.Linear):
        return False
    if module.in_features % 16 or module.out_features % 16:
        return False
    if generation == 2:
        return min(module.in_features, module.out_features) >= GEN2_MIN_FP8_DIM
    return not fqn.endswith("lm_head")


def model_generation(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    return getattr(config, "generation", 1) or 1


def fp8_module_names(model: nn.Module) -> list[str]:
    """The qualified names of the Linear layers `enable_fp8` converts, in module order."""
    generation = model_generation(model)
    return [fqn for fqn, module in model.named_modules() if fp8_module_filter(module, fqn, generation)]


def enable_fp8(model: nn.Module) -> list[str]:
    """Swap the layers named by `fp8_module_names` for torchao's `Float8Linear` (tensorwise recipe, through
    accelerate's `convert_model_to_fp8_ao`); returns their names. Call it before `torch.compile`."""
    # torchao is optional (the fp8 extra): imported only when FP8 is switched on.
    from accelerate.utils.ao import convert_model_to_fp8_ao
    from torchao.float8 import Float8LinearConfig

    names = fp8_module_names(model)
    chosen = set(names)
    convert_model_to_fp8_ao(
        model,
        config=Float8LinearConfig.from_recipe_name(FP8_RECIPE),
        module_filter_func=lambda module, fqn: fqn in chosen,
    )
    return names


def _float8_linear_class():
    """torchao's Float8Linear, or None when torchao was never imported (then no model holds one)."""
    if "torchao" not in sys.modules:
        return None
    from torchao.float8.float8_linear import Float8Linear

    return Float8Linear


@contextmanager
def fp8_disabled(model: nn.Module):
    """Inside: every torchao `Float8Linear` of `model` is a plain `nn.Linear` on the same weight (bf16 under
    autocast), so evaluation never runs in FP8; restored on exit. Yields the names of the swapped layers."""
    float8_linear = _float8_linear_class()
    swapped = []
    if float8_linear is not None:
        for fqn, module in list(model.named_modules()):
            if fqn and isinstance(module, float8_linear):
                parent_name, _, attribute = fqn.rpartition(".")
                parent = model.get_submodule(parent_name)
                plain = nn.Linear(
                    module.in_features,
                    module.out_features,
                    bias=module.bias is not None,
                    device="meta",
                    dtype=module.weight.dtype,
                )
                plain.weight = module.weight  # shared, not copied
                if module.bias is not None:
                    plain.bias = module.bias
                setattr(parent, attribute, plain)
                swapped.append((fqn, parent, attribute, module))
    try:
        yield [fqn for fqn, *_ in swapped]
    finally:
        for _, parent, attribute, module in swapped:
            setattr(parent, attribute, module)
