"""`convert(src, dst, ...)`: any of the three formats in, any of them out.

Generation 2 (nanochat 2026) converts between `nanochat` and `hf`; transformers' built-in class (`native`)
cannot represent it, so `--to native` refuses it with that reason instead of dropping its tensors.

All checks (formats, destination, keys, shapes, tokenizer vocabulary) run before anything is written,
and the output folder appears only once it is complete (see `nanochat_hf.atomic`).
"""

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from ..atomic import atomic_folder, check_parent
from ..configuration_nanochat_hf import NanoChatHFConfig
from ..errors import UserInputError
from ..formats import FORMATS, detect_format, read_json
from ..loading import check_vocabulary, open_config, open_tokenizer
from ..modeling_nanochat_hf import NanoChatHFForCausalLM
from ..tokenizer.tiktoken_convert import load_nanochat_tokenizer
from ..tokenizer.token_bytes import TOKEN_BYTES_FILENAME, save_token_bytes
from .nanochat_checkpoint import (
    available_steps,
    check_nanochat_representable,
    check_state_dict,
    load_nanochat_checkpoint,
    meta_model_config,
    nanochat_state_dict,
)
from .native import config_from_native, config_to_native, state_dict_from_native, state_dict_to_native


logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("hf", "native", "nanochat")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_safetensors_folder(folder: Path) -> dict:
    """The state dict of a `save_pretrained` folder, one file or sharded with an index."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index_path = folder / "model.safetensors.index.json"
    if index_path.exists():
        weight_map = read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict):
            raise UserInputError(f"{index_path}: no 'weight_map' object")
        files = sorted(set(weight_map.values()))
    elif (folder / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise UserInputError(f"{folder}: no model.safetensors (or model.safetensors.index.json)")
    state_dict = {}
    for name in files:
        path = folder / name
        if not path.exists():
            raise UserInputError(f"{path}: missing (listed in {index_path.name})")
        try:
            state_dict.update(load_file(path))
        except (SafetensorError, OSError) as err:
            raise UserInputError(f"{path}: not a readable safetensors file ({' '.join(str(err).split())})") from None
    return state_dict


def check_output_can_hold(config: NanoChatHFConfig, output_format: str, src: Path) -> None:
    """Refuse, before the weights are read, a model the output format cannot represent."""
    if output_format == "native" and config.uses_generation2_features:
        raise UserInputError(
            f"{src}: a generation-2 nanochat model (value embeddings, sliding windows, per-layer scalars, smear, "
            "backout, padded vocabulary); transformers' built-in NanoChat (--to native) cannot represent it and "
            "would drop its tensors. Convert it to this package's format instead (--to hf, the default)"
        )
    if output_format == "nanochat":
        check_nanochat_representable(config, str(src))


def load_source(
    src: Path, source_format: str, step: int | None, output_format: str = "hf"
) -> tuple[NanoChatHFConfig, dict]:
    """(our config, state dict under our key names) of a model folder in any format."""
    if source_format == "nanochat":
        config, state_dict, _ = load_nanochat_checkpoint(src, step=step)  # tensors memory-mapped, not read
        check_output_can_hold(config, output_format, src)
        return config, state_dict
    if step is not None and output_format != "nanochat":
        raise UserInputError(
            "--step only applies to nanochat checkpoint folders (--from nanochat) or to the step written "
            "with --to nanochat"
        )
    config_path = src / "config.json"
    if not config_path.exists():
        raise UserInputError(f"{config_path}: missing")
    if source_format == "native":
        from transformers import NanoChatConfig as NativeConfig

        try:
            config = config_from_native(NativeConfig.from_pretrained(src))
        except ValueError as err:
            raise UserInputError(f"{config_path}: {err}") from None
        try:
            state_dict = state_dict_from_native(load_safetensors_folder(src))
        except KeyError as err:
            raise UserInputError(f"{src}: unexpected key {err.args[0]!r} for transformers' NanoChat") from None
    else:
        config = open_config(src, what="SRC", check_format=False)  # the format is decided above
        check_output_can_hold(config, output_format, src)
        state_dict = load_safetensors_folder(src)
    check_state_dict(state_dict, config, str(src))
    return config, state_dict


def build_model(config: NanoChatHFConfig, state_dict: dict, output_format: str, dtype: torch.dtype):
    """An output model holding exactly `state_dict` (built on the meta device: no wasted random init)."""
    if output_format == "native":
        from transformers import NanoChatForCausalLM as NativeForCausalLM

        model_config, model_class = config_to_native(config), NativeForCausalLM
        state_dict = state_dict_to_native(state_dict)
    else:
        model_config, model_class = config, NanoChatHFForCausalLM
    state_dict = {k: v.to(dtype) for k, v in state_dict.items()}
    with torch.device("meta"):
        model = model_class(model_config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.config.dtype = dtype
    return model


def convert(
    src,
    dst,
    from_format: str | None = None,
    to_format: str = "hf",
    step: int | None = None,
    dtype: str | None = None,
    tokenizer: str | os.PathLike | None = None,
) -> Path:
    """Convert the model in `src` into a new folder `dst`; returns `dst`.

    `dtype` (float32 | bfloat16 | float16) sets the written weights; by default they keep the dtype of the
    source's `lm_head` (nanochat stores everything but the embedding in float32, so float32 is lossless).
    `tokenizer` is a nanochat tokenizer (folder with `tokenizer.pkl`, or the file) converted alongside.
    """
    src, dst = Path(src), Path(dst)
    if to_format not in OUTPUT_FORMATS:
        raise UserInputError(f"--to must be one of {OUTPUT_FORMATS}, got {to_format!r}")
    if from_format is not None and from_format not in FORMATS:
        raise UserInputError(f"--from must be one of {FORMATS}, got {from_format!r}")
    if dtype is not None and dtype not in DTYPES:
        raise UserInputError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if dst.exists():
        raise UserInputError(f"{dst}: already exists; choose a new destination or remove it first")
    if not src.is_dir():
        raise UserInputError(f"{src}: no such folder")
    check_parent(dst)
    source_format = from_format or detect_format(src)
    if to_format == "nanochat" and tokenizer is not None:
        raise UserInputError("--tokenizer converts a nanochat tokenizer for --to hf or native; not with --to nanochat")

    config, state_dict = load_source(src, source_format, step, to_format)
    warn_non_finite(state_dict, src)
    if to_format == "nanochat":
        if step is None:
            step = available_steps(src)[-1] if source_format == "nanochat" else 0
        write_nanochat_checkpoint(config, state_dict, dst, step, DTYPES[dtype] if dtype else None)
        logger.info("converted %s (%s) -> %s (nanochat, step %d)", src, source_format, dst, step)
        return dst
    hf_tokenizer = load_matching_tokenizer(tokenizer, config) if tokenizer is not None else None
    folder_tokenizer = None
    if hf_tokenizer is None and source_format != "nanochat" and (src / "tokenizer_config.json").is_file():
        folder_tokenizer = open_tokenizer(src, what="SRC")  # kept beside the converted weights
        check_vocabulary(len(folder_tokenizer), config, src)
    out_dtype = DTYPES[dtype] if dtype else state_dict["lm_head.weight"].dtype
    model = build_model(config, state_dict, to_format, out_dtype)

    with atomic_folder(dst) as tmp:
        if hf_tokenizer is not None:
            save_tokenizer_with_model(hf_tokenizer, tmp, model)
        if folder_tokenizer is not None:
            folder_tokenizer.save_pretrained(tmp)
            if (src / TOKEN_BYTES_FILENAME).is_file():
                shutil.copyfile(src / TOKEN_BYTES_FILENAME, tmp / TOKEN_BYTES_FILENAME)
        model.save_pretrained(tmp)
    logger.info("converted %s (%s) -> %s (%s, %s)", src, source_format, dst, to_format, out_dtype)
    return dst


def warn_non_finite(state_dict: dict, src) -> None:
    bad = [key for key, tensor in state_dict.items() if not bool(torch.isfinite(tensor).all())]
    if bad:
        logger.warning(
            "%s: %d tensor(s) hold NaN or infinite values (%s); the converted model will not generate",
            src,
            len(bad),
            ", ".join(bad[:3]),
        )


def write_nanochat_checkpoint(
    config: NanoChatHFConfig, state_dict: dict, dst: Path, step: int, dtype: torch.dtype | None = None
) -> None:
    """`model_{step:06d}.pt` + `meta_{step:06d}.json` as nanochat writes them, into a new folder `dst`.

    Tensors keep their dtype unless `dtype` is given, so hf -> nanochat -> hf is bit-identical.
    """
    if step < 0:
        raise UserInputError(f"--step must be >= 0, got {step}")
    tensors = nanochat_state_dict(state_dict, config)
    if dtype is not None:
        tensors = {key: tensor.to(dtype) for key, tensor in tensors.items()}
    meta = {"step": step, "model_config": meta_model_config(config)}
    with atomic_folder(dst) as tmp:
        torch.save(tensors, tmp / f"model_{step:06d}.pt")
        (tmp / f"meta_{step:06d}.json").write_text(json.dumps(meta, indent=2))


def load_matching_tokenizer(tokenizer_src, config: NanoChatHFConfig):
    """(tokenizer, token_bytes) of a nanochat tokenizer, checked against the model's vocabulary."""
    tokenizer, token_bytes = load_nanochat_tokenizer(tokenizer_src, model_max_length=config.sequence_len)
    if len(tokenizer) != config.vocab_size:
        raise UserInputError(
            f"{tokenizer_src}: tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {config.vocab_size}"
        )
    return tokenizer, token_bytes


def save_tokenizer_with_model(tokenizer_and_bytes, folder: Path, model) -> None:
    """Write the tokenizer (+ token_bytes.pt) into `folder` and record its special-token ids on the model."""
    tokenizer, token_bytes = tokenizer_and_bytes
    tokenizer.save_pretrained(folder)
    save_token_bytes(token_bytes, folder)
    for target in (model.config, model.generation_config):
        target.bos_token_id = tokenizer.bos_token_id
        target.eos_token_id = tokenizer.eos_token_id
        target.pad_token_id = tokenizer.pad_token_id


__all__ = [
    "convert",
    "load_source",
    "load_safetensors_folder",
    "build_model",
    "load_matching_tokenizer",
    "write_nanochat_checkpoint",
]
