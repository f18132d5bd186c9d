"""Reading Karpathy's nanochat checkpoint folders, both generations, and nanochat's key names.

A folder such as `base_checkpoints/d32/` holds, per saved step N (six digits):
`model_N.pt` (a `torch.save`d state dict; `transformer.wte.weight` in bfloat16 when trained on CUDA),
`meta_N.json` (with `model_config`: sequence_len, vocab_size, n_layer, n_head, n_kv_head, n_embd)
and optimizer shards `optim_N_rank*.pt`, which conversion does not need.

Generation 2 (2026) adds `window_pattern` to `model_config` and the tensors `resid_lambdas`, `x0_lambdas`,
`smear_gate.weight`, `smear_lambda`, `backout_lambda`, `value_embeds.{i}.weight` (top level in nanochat,
under `transformer.` here) and `transformer.h.{i}.attn.ve_gate.weight`; its tables (`wte`, `lm_head`,
value embeddings) have the vocabulary padded to a multiple of 64 rows, and `wte` and the value embeddings
are stored in bfloat16 beside float32 matrices. A checkpoint is generation 2 when its meta has
`window_pattern` or its state dict has any of those tensors; then every one of them must be present.

The state dict is read with `torch.load(weights_only=True)`: tensors and plain containers only, so a
hostile file cannot run code. Keys saved from a `torch.compile`d module carry an `_orig_mod.` prefix,
which is stripped.
"""

import re
from pathlib import Path

import torch

from ..configuration_nanochat_hf import GENERATION_DEFAULTS, SMEAR_GATE_CHANNELS, VE_GATE_CHANNELS, NanoChatHFConfig
from ..errors import UserInputError
from ..formats import read_json
from ..loading import check_config_size, minimum_parameters


MODEL_FILE = re.compile(r"^model_(\d+)\.pt$")
COMPILE_PREFIX = "_orig_mod."
META_CONFIG_KEYS = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")
# Parameters that exist only in nanochat's 2026 architecture (value embeddings, per-layer scalars, ...).
GENERATION_2_MARKERS = ("resid_lambdas", "x0_lambdas", "smear_gate", "value_embeds", "ve_gate", "backout_lambda")
# Top-level in nanochat's GPT, inside the trunk (`transformer.`) here.
TOP_LEVEL_STEMS = ("resid_lambdas", "x0_lambdas", "smear_lambda", "backout_lambda", "smear_gate", "value_embeds")


def key_from_nanochat(key: str) -> str:
    return f"transformer.{key}" if key.split(".")[0] in TOP_LEVEL_STEMS else key


def key_to_nanochat(key: str) -> str:
    rest = key.removeprefix("transformer.")
    return rest if rest.split(".")[0] in TOP_LEVEL_STEMS else key


def available_steps(folder: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := MODEL_FILE.match(p.name)))


def expected_shapes(config: NanoChatHFConfig) -> dict[str, tuple[int, ...]]:
    """The state dict a config implies, in this package's names: key -> shape, in nanochat's order."""
    d, hd, vocab = config.n_embd, config.head_dim, config.padded_vocab_size
    shapes = {}
    if config.layer_lambdas:
        shapes["transformer.resid_lambdas"] = (config.n_layer,)
        shapes["transformer.x0_lambdas"] = (config.n_layer,)
    if config.smear:
        shapes["transformer.smear_lambda"] = (1,)
    if config.backout:
        shapes["transformer.backout_lambda"] = (1,)
    shapes["transformer.wte.weight"] = (vocab, d)
    ve_layers = config.value_embedding_layers
    for i in range(config.n_layer):
        prefix = f"transformer.h.{i}"
        shapes[f"{prefix}.attn.c_q.weight"] = (config.n_head * hd, d)
        shapes[f"{prefix}.attn.c_k.weight"] = (config.n_kv_head * hd, d)
        shapes[f"{prefix}.attn.c_v.weight"] = (config.n_kv_head * hd, d)
        shapes[f"{prefix}.attn.c_proj.weight"] = (d, d)
        if i in ve_layers:
            shapes[f"{prefix}.attn.ve_gate.weight"] = (config.n_kv_head, VE_GATE_CHANNELS)
        shapes[f"{prefix}.mlp.c_fc.weight"] = (4 * d, d)
        shapes[f"{prefix}.mlp.c_proj.weight"] = (d, 4 * d)
    shapes["lm_head.weight"] = (vocab, d)
    if config.smear:
        shapes["transformer.smear_gate.weight"] = (1, SMEAR_GATE_CHANNELS)
    for i in ve_layers:
        shapes[f"transformer.value_embeds.{i}.weight"] = (vocab, config.n_kv_head * hd)
    return shapes


def _listed(keys: list[str]) -> str:
    return f"{keys[:5]}{' ...' if len(keys) > 5 else ''}"


def check_state_dict(state_dict: dict, config: NanoChatHFConfig, source: str, nanochat_names: bool = False) -> None:
    """Every key present with the shape the config implies, and nothing else; errors name the key.

    `state_dict` is in this package's names; `nanochat_names=True` reports keys as nanochat writes them.
    """
    stored = sum(t.numel() for t in state_dict.values() if isinstance(t, torch.Tensor))
    # Far more than the file holds (n_layer 100000000): said before listing every expected key; a near miss
    # is left to the key-by-key check below, which names the tensor.
    if minimum_parameters(config) > 16 * stored:
        raise UserInputError(
            f"{source}: the config describes at least {minimum_parameters(config):,} parameters "
            f"(n_layer {config.n_layer}, n_embd {config.n_embd}) but the file holds {stored:,}"
        )
    expected = expected_shapes(config)
    show = key_to_nanochat if nanochat_names else (lambda key: key)
    kind = "a generation-2 (2026) checkpoint" if config.generation == 2 else "a generation-1 checkpoint"
    if config.generation == 1:
        generation_2 = sorted(k for k in state_dict if any(marker in k for marker in GENERATION_2_MARKERS))
        if generation_2:
            raise UserInputError(
                f"{source}: has generation-2 (2026) parameters such as {show(generation_2[0])!r}, but its "
                "config is generation 1"
            )
    missing = [show(k) for k in expected if k not in state_dict]
    unexpected = [show(k) for k in state_dict if k not in expected]
    if missing:
        raise UserInputError(f"{source}: {kind}, but missing key(s) {_listed(missing)}")
    if unexpected:
        raise UserInputError(f"{source}: {kind}, but unexpected key(s) {_listed(unexpected)}")
    for key, shape in expected.items():
        tensor = state_dict[key]
        if not isinstance(tensor, torch.Tensor):
            raise UserInputError(f"{source}: {show(key)} is a {type(tensor).__name__}, expected a tensor")
        if tuple(tensor.shape) != shape:
            vocab = f"vocab_size={config.vocab_size}"
            if config.padded_vocab_size != config.vocab_size or config.pad_vocab_size_to > 1:
                vocab += f" padded to a multiple of {config.pad_vocab_size_to} = {config.padded_vocab_size} rows"
            raise UserInputError(
                f"{source}: {show(key)} has shape {tuple(tensor.shape)}, but the model config implies {shape} "
                f"(n_layer={config.n_layer}, n_embd={config.n_embd}, n_head={config.n_head}, "
                f"n_kv_head={config.n_kv_head}, {vocab})"
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


def is_generation2(model_config: dict, keys) -> bool:
    """nanochat 2026 writes `window_pattern` into the meta and has tensors generation 1 lacks."""
    return "window_pattern" in model_config or any(
        any(marker in key for marker in GENERATION_2_MARKERS) for key in keys
    )


def config_from_meta(meta: dict, meta_path: Path, keys=()) -> NanoChatHFConfig:
    """The config of a checkpoint from its meta; `keys` (the state dict's) decide the generation with it."""
    model_config = meta.get("model_config")
    if not isinstance(model_config, dict):
        raise UserInputError(f"{meta_path}: no 'model_config' object")
    missing = [k for k in META_CONFIG_KEYS if k not in model_config]
    if missing:
        raise UserInputError(f"{meta_path}: 'model_config' lacks {missing} (expected {list(META_CONFIG_KEYS)})")
    fields = {k: model_config[k] for k in META_CONFIG_KEYS}
    if is_generation2(model_config, keys):
        # nanochat reads a generation-2 meta without the key as all-long windows, and upper-cases the pattern.
        pattern = model_config.get("window_pattern", "L")
        if not isinstance(pattern, str) or not pattern or set(pattern.upper()) - {"S", "L"}:
            raise UserInputError(
                f"{meta_path}: window_pattern {pattern!r} must be a non-empty string of the letters S and L"
            )
        fields.update(generation=2, window_pattern=pattern.upper())
    else:
        fields.update(rotary_dtype="bfloat16")  # generation 1 keeps its rotary tables in bfloat16
    try:
        return NanoChatHFConfig(**fields, head_dim=None)
    except ValueError as err:
        raise UserInputError(f"{meta_path}: invalid 'model_config': {err}") from None


def load_nanochat_checkpoint(folder, step: int | None = None) -> tuple[NanoChatHFConfig, dict, dict]:
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
    check_config_size(config_from_meta(meta, meta_path), meta_path, "meta")  # a broken meta: before the weights
    state_dict = load_tensor_file(model_path)
    if not isinstance(state_dict, dict):
        raise UserInputError(f"{model_path}: holds a {type(state_dict).__name__}, expected a state dict")
    state_dict = {key_from_nanochat(k.removeprefix(COMPILE_PREFIX)): v for k, v in state_dict.items()}
    config = config_from_meta(meta, meta_path, state_dict.keys())
    check_state_dict(state_dict, config, str(model_path), nanochat_names=True)
    return config, state_dict, meta


def check_nanochat_representable(config: NanoChatHFConfig, where: str) -> None:
    """nanochat's own GPT has no switches: every flag must hold its generation's value (and soft-cap 15)."""
    defaults = GENERATION_DEFAULTS[config.generation]
    differing = [
        f"{name}={getattr(config, name)!r} (nanochat: {value!r})"
        for name, value in defaults.items()
        if name not in ("window_pattern", "rotary_dtype") and getattr(config, name) != value
    ]
    if config.softcap != 15.0:
        differing.append(f"softcap={config.softcap!r} (nanochat: 15.0)")
    if config.generation == 1 and "S" in config.window_pattern:
        differing.append(f"window_pattern={config.window_pattern!r} (generation 1 has no windows)")
    if differing:
        raise UserInputError(
            f"{where}: nanochat's generation-{config.generation} GPT cannot represent this model: "
            + ", ".join(differing)
        )


def meta_model_config(config: NanoChatHFConfig) -> dict:
    """`model_config` of a meta file as nanochat writes it (generation 2 adds `window_pattern`)."""
    model_config = {key: getattr(config, key) for key in META_CONFIG_KEYS}
    if config.generation == 2:
        model_config["window_pattern"] = config.window_pattern
    return model_config


def nanochat_state_dict(state_dict: dict, config: NanoChatHFConfig) -> dict:
    """This package's state dict in nanochat's names and registration order (tensors unchanged)."""
    return {key_to_nanochat(key): state_dict[key] for key in expected_shapes(config)}
