"""LoRA adapters of a nanochat model: which base they belong to, and merging them into a full model.

A LoRA adapter is only meaningful on top of the exact weights it was trained on. peft records the base's
*name* (`adapter_config.json: base_model_name_or_path`), and loading an adapter onto a base of the right
shapes but different weights (another checkpoint of the same depth) silently gives a wrong model. So a
fine-tuning run also writes `nanochat_base.json`: the base's shape and a SHA-256 of its token-embedding
matrix (read from the base's safetensors file, as float32, so the dtype it is stored in does not matter).
`merge_lora` refuses a base whose fingerprint differs; shape mismatches are caught for any adapter.
"""

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import PretrainedConfig
from transformers.utils import cached_file

from ..atomic import atomic_folder
from ..errors import UserInputError
from ..loading import open_model, open_tokenizer
from .generation import configure_chat_generation


logger = logging.getLogger(__name__)

FINGERPRINT_FILENAME = "nanochat_base.json"
FINGERPRINT_TENSOR = "transformer.wte.weight"
SHAPE_KEYS = ("n_layer", "n_embd", "n_head", "n_kv_head", "vocab_size")


def _weights_file(base: str, tensor_name: str) -> str:
    index = cached_file(base, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False)
    filename = "model.safetensors"
    if index is not None:
        filename = json.loads(Path(index).read_text())["weight_map"][tensor_name]
    return cached_file(base, filename)


def base_fingerprint(base: str) -> dict:
    """Shape and embedding hash of a saved nanochat model (folder or Hub id)."""
    try:
        config, _ = PretrainedConfig.get_config_dict(str(base))
        with safe_open(_weights_file(str(base), FINGERPRINT_TENSOR), framework="pt") as weights:
            embedding = weights.get_tensor(FINGERPRINT_TENSOR)
    except (OSError, KeyError, ValueError) as err:
        raise UserInputError(f"base model {base}: cannot read its config and weights ({err})") from None
    digest = hashlib.sha256(embedding.to(torch.float32).contiguous().numpy().tobytes()).hexdigest()
    return {"shape": {key: config.get(key) for key in SHAPE_KEYS}, "wte_sha256": digest}


def write_base_fingerprint(folder, base: str) -> None:
    fingerprint = {"base_model_name_or_path": str(base), **base_fingerprint(base)}
    (Path(folder) / FINGERPRINT_FILENAME).write_text(json.dumps(fingerprint, indent=1))


def read_adapter_config(adapter) -> dict:
    path = Path(adapter) / "adapter_config.json"
    if not path.is_file():
        raise UserInputError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserInputError(f"{path}: not valid JSON ({err})") from None


def resolve_adapter_base(adapter, base: str | None = None) -> str:
    """The base to load under `adapter`: `base` if given, else the one recorded in the adapter."""
    recorded = read_adapter_config(adapter).get("base_model_name_or_path")
    base = base or recorded
    if not base:
        raise UserInputError(f"{adapter}: adapter_config.json names no base model; pass --base")
    return str(base)


def check_adapter_base(adapter, base: str) -> None:
    """Raise UserInputError if `adapter` was trained on a model other than `base`."""
    path = Path(adapter) / FINGERPRINT_FILENAME
    if not path.is_file():
        logger.warning("%s: no %s; only the shapes of the base can be checked", adapter, FINGERPRINT_FILENAME)
        return
    recorded = json.loads(path.read_text(encoding="utf-8"))
    found = base_fingerprint(base)
    if recorded.get("shape") != found["shape"]:
        raise UserInputError(
            f"adapter {adapter} was trained on a base of shape {recorded.get('shape')} "
            f"({recorded.get('base_model_name_or_path')}), but {base} has shape {found['shape']}"
        )
    if recorded.get("wte_sha256") != found["wte_sha256"]:
        raise UserInputError(
            f"adapter {adapter} was trained on {recorded.get('base_model_name_or_path')}, and {base} has the same "
            "shape but different weights (its token embedding differs); pass the base the adapter was trained on"
        )


def load_adapter_model(adapter, base: str | None = None, dtype: torch.dtype = torch.float32, device=None):
    """(peft model, base name): the base in full precision with the adapter on top, checked against each other."""
    # peft is the optional `chat` extra: imported only when an adapter is really loaded.
    from peft import PeftModel

    base = resolve_adapter_base(adapter, base)
    check_adapter_base(adapter, base)
    adapter_keys = read_adapter_keys(adapter)  # a broken weights file fails before the base is loaded
    model = open_model(base, what="base model", dtype=dtype, device_map=device)
    try:
        model = PeftModel.from_pretrained(model, str(adapter))
    except (RuntimeError, ValueError, KeyError, SafetensorError) as err:
        # Size mismatches and missing target modules: the adapter does not fit this base.
        raise UserInputError(f"adapter {adapter} does not fit the base {base}: {str(err).splitlines()[0]}") from None
    check_every_adapter_weight_placed(adapter_keys, model, adapter, base)
    return model, base


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def read_adapter_keys(adapter) -> list[str] | None:
    """The tensor names of the adapter's weights file (None when it has none in safetensors form)."""
    path = Path(adapter) / ADAPTER_WEIGHTS
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as weights:
            return list(weights.keys())
    except (SafetensorError, OSError) as err:
        raise UserInputError(f"{path}: not a readable safetensors file ({' '.join(str(err).split())})") from None


def check_every_adapter_weight_placed(adapter_keys, model, adapter, base) -> None:
    """peft ignores adapter weights whose module the base lacks (a 2-layer adapter on a 1-layer base loads
    with layer 1 dropped); refuse that instead of merging part of the adapter."""
    if adapter_keys is None:
        return
    modules = {name for name, _ in model.named_modules()}
    missing = sorted(
        {key.split(".lora_")[0] for key in adapter_keys if ".lora_" in key} - modules,
        key=lambda name: (len(name), name),
    )
    if missing:
        raise UserInputError(
            f"adapter {adapter} does not fit the base {base}: it has LoRA weights for {len(missing)} module(s) the "
            f"base lacks, e.g. {missing[0]} (trained on a deeper or different model?)"
        )


def merge_lora(adapter, destination, base: str | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Merge `adapter` into its base and write a full model folder (with the tokenizer) to `destination`.

    The base is loaded in `dtype` (not 4-bit, even for a QLoRA adapter: merged weights must be exact);
    the destination appears only when complete.
    """
    destination = Path(destination)
    if destination.exists():
        raise UserInputError(f"{destination}: already exists; choose a new destination or remove it first")
    model, base = load_adapter_model(adapter, base, dtype=dtype)
    merged = model.merge_and_unload()
    tokenizer_source = adapter if (Path(adapter) / "tokenizer_config.json").is_file() else base
    tokenizer = open_tokenizer(str(tokenizer_source), what="tokenizer")
    configure_chat_generation(merged, tokenizer)
    with atomic_folder(destination) as staging:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    logger.info("merged %s into %s -> %s", adapter, base, destination)
    return destination
