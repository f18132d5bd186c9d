"""Reading Karpathy's nanochat checkpoint folders (generation 1).

A folder such as `base_checkpoints/d32/` holds, per saved step N (six digits):
`model_N.pt` (a `torch.save`d state dict; `transformer.wte.weight` in bfloat16 when trained on CUDA),
`meta_N.json` (with `model_config`: sequence_len, vocab_size, n_layer, n_head, n_kv_head, n_embd)
and optimizer shards `optim_N_rank*.pt`, which conversion does not need.

The state dict is read with `torch.load(weights_only=True)`: tensors and plain containers only, so a
hostile file cannot run code. Keys saved from a `torch.compile`d module carry an `_orig_mod.` prefix,
which is stripped.
"""

import re
from pathlib import Path

import torch

from ..configuration_nanochat_hf import NanoChatConfig
from ..errors import UserInputError
from ..formats import read_json
from ..loading import check_config_size, minimum_parameters


MODEL_FILE = re.compile(r"^model_(\d+)\.pt$")
COMPILE_PREFIX = "_orig_mod."
META_CONFIG_KEYS = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")
# Parameters that exist only in nanochat's 2026 architecture (value embeddings, per-layer scalars, ...).
GENERATION_2_MARKERS = ("resid_lambdas", "x0_lambdas", "smear_gate", "value_embeds", "ve_gate", "backout_lambda")


def available_steps(folder: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := MODEL_FILE.match(p.name)))


def expected_shapes(config: NanoChatConfig) -> dict[str, tuple[int, ...]]:
    """nanochat's generation-1 state dict: key -> shape, in nanochat's registration order."""
    d, hd = config.n_embd, config.head_dim
    shapes = {"transformer.wte.weight": (config.vocab_size, d)}
    for i in range(config.n_layer):
        prefix = f"transformer.h.{i}"
        shapes[f"{prefix}.attn.c_q.weight"] = (config.n_head * hd, d)
        shapes[f"{prefix}.attn.c_k.weight"] = (config.n_kv_head * hd, d)
        shapes[f"{prefix}.attn.c_v.weight"] = (config.n_kv_head * hd, d)
        shapes[f"{prefix}.attn.c_proj.weight"] = (d, d)
        shapes[f"{prefix}.mlp.c_fc.weight"] = (4 * d, d)
        shapes[f"{prefix}.mlp.c_proj.weight"] = (d, 4 * d)
    shapes["lm_head.weight"] = (config.vocab_size, d)
    return shapes


def check_state_dict(state_dict: dict, config: NanoChatConfig, source: str) -> None:
    """Every key present with the shape the config implies, and nothing else; errors name the key."""
    stored = sum(t.numel() for t in state_dict.values() if isinstance(t, torch.Tensor))
    # Far more than the file holds (n_layer 100000000): said before listing every expected key; a near miss
    # is left to the key-by-key check below, which names the tensor.
    if minimum_parameters(config) > 16 * stored:
        raise UserInputError(
            f"{source}: the config describes at least {minimum_parameters(config):,} parameters "
            f"(n_layer {config.n_layer}, n_embd {config.n_embd}) but the file holds {stored:,}"
        )
    expected = expected_shapes(config)
    generation_2 = sorted(k for k in state_dict if any(marker in k for marker in GENERATION_2_MARKERS))
    if generation_2:
        raise UserInputError(
            f"{source}: has generation-2 (2026) parameters such as {generation_2[0]!r}; only the generation-1 "
            "architecture (the released d32/d20) is supported"
        )
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing:
        raise UserInputError(f"{source}: missing key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        raise UserInputError(f"{source}: unexpected key(s) {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for key, shape in expected.items():
        tensor = state_dict[key]
        if not isinstance(tensor, torch.Tensor):
            raise UserInputError(f"{source}: {key} is a {type(tensor).__name__}, expected a tensor")
        if tuple(tensor.shape) != shape:
            raise UserInputError(
                f"{source}: {key} has shape {tuple(tensor.shape)}, but the model config implies {shape} "
                f"(n_layer={config.n_layer}, n_embd={config.n_embd}, n_head={config.n_head}, "
                f"n_kv_head={config.n_kv_head}, vocab_size={config.vocab_size})"
            )


def load_tensor_file(path: Path):
    """`torch.load(weights_only=True)` of a zip or a legacy (pre-1.6, non-zip) file; refusals in one line."""
    if path.is_dir() or not path.is_file():
        raise UserInputError(f"{path}: not a file")
    try:
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
        # mmap needs the zip format; a legacy file is read whole, through the same restricted unpickler.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad input file
        text = str(err)
        if "Weights only load failed" in text or "Unsupported global" in text or "Unsupported operand" in text:
            detail = next((line.strip() for line in text.splitlines() if "Unsupported" in line), "")
            raise UserInputError(
                f"{path}: refused: it holds more than tensors and plain containers, and loading it would run "
                f"code{f' ({detail})' if detail else ''}; only weights-only files are read"
            ) from None
        reason = " ".join(text.split())[:200] or type(err).__name__
        raise UserInputError(f"{path}: not a loadable tensor state dict ({type(err).__name__}: {reason})") from None


def config_from_meta(meta: dict, meta_path: Path) -> NanoChatConfig:
    model_config = meta.get("model_config")
    if not isinstance(model_config, dict):
        raise UserInputError(f"{meta_path}: no 'model_config' object")
    missing = [k for k in META_CONFIG_KEYS if k not in model_config]
    if missing:
        raise UserInputError(f"{meta_path}: 'model_config' lacks {missing} (expected {list(META_CONFIG_KEYS)})")
    if "window_pattern" in model_config and set(str(model_config["window_pattern"])) != {"L"}:
        raise UserInputError(
            f"{meta_path}: window_pattern {model_config['window_pattern']!r} is a generation-2 (2026) model; "
            "only generation 1 is supported"
        )
    try:
        # Generation 1 keeps its rotary tables in bfloat16; we reproduce that exactly.
        return NanoChatConfig(**{k: model_config[k] for k in META_CONFIG_KEYS}, head_dim=None, rotary_dtype="bfloat16")
    except ValueError as err:
        raise UserInputError(f"{meta_path}: invalid 'model_config': {err}") from None


def load_nanochat_checkpoint(folder, step: int | None = None) -> tuple[NanoChatConfig, dict, dict]:
    """(config, state_dict, meta) of step `step` (default: the newest) of a nanochat checkpoint folder."""
    folder = Path(folder)
    steps = available_steps(folder)
    if not steps:
        raise UserInputError(f"{folder}: no nanochat model file (model_NNNNNN.pt)")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise UserInputError(f"{folder}: no checkpoint for step {step}; available steps: {steps}")
    model_path = folder / f"model_{step:06d}.pt"
    meta_path = folder / f"meta_{step:06d}.json"
    if not model_path.exists():  # a model file saved without zero padding
        model_path = next(p for p in folder.iterdir() if (m := MODEL_FILE.match(p.name)) and int(m.group(1)) == step)
    if not meta_path.exists():
        raise UserInputError(f"{meta_path}: missing (every model_NNNNNN.pt needs its meta_NNNNNN.json)")

    meta = read_json(meta_path)
    config = config_from_meta(meta, meta_path)
    check_config_size(config, meta_path, "meta")
    state_dict = load_tensor_file(model_path)
    if not isinstance(state_dict, dict):
        raise UserInputError(f"{model_path}: holds a {type(state_dict).__name__}, expected a state dict")
    state_dict = {k.removeprefix(COMPILE_PREFIX): v for k, v in state_dict.items()}
    check_state_dict(state_dict, config, str(model_path))
    return config, state_dict, meta
