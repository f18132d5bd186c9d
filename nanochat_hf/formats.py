"""Recognising a model folder's format from the files it holds."""

import json
import os
from pathlib import Path

from .errors import UserInputError


FORMATS = ("nanochat", "native", "hf")
NATIVE_MODEL_TYPE = "nanochat"  # transformers' built-in port
HF_MODEL_TYPE = "nanochat_hf"  # this package


def read_json(path: Path) -> dict:
    """A JSON object from `path`; anything else (a folder, bad UTF-8, bad JSON, a list) is a `UserInputError`."""
    if Path(path).is_dir():
        raise UserInputError(f"{path}: is a folder, expected a JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    except json.JSONDecodeError as err:
        raise UserInputError(f"{path}: not valid JSON ({err})") from None
    except UnicodeDecodeError as err:
        raise UserInputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not isinstance(payload, dict):
        raise UserInputError(f"{path}: holds a JSON {type(payload).__name__}, expected an object")
    return payload


def detect_format(folder: str | os.PathLike) -> str:
    """Which of `nanochat`, `native`, `hf` a folder holds, judged by the files present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserInputError(f"{folder}: no such folder")
    has_nanochat = any(folder.glob("model_*.pt"))
    config_path = folder / "config.json"
    if has_nanochat and config_path.exists():
        raise UserInputError(
            f"{folder}: holds both nanochat checkpoints (model_*.pt) and a config.json; pass --from to choose"
        )
    if has_nanochat:
        return "nanochat"
    if config_path.exists():
        model_type = read_json(config_path).get("model_type")
        if model_type == NATIVE_MODEL_TYPE:
            return "native"
        if model_type == HF_MODEL_TYPE:
            return "hf"
        raise UserInputError(
            f"{config_path}: model_type is {model_type!r}; expected {HF_MODEL_TYPE!r} (this package) "
            f"or {NATIVE_MODEL_TYPE!r} (transformers' built-in NanoChat)"
        )
    raise UserInputError(
        f"{folder}: found neither nanochat checkpoints (model_NNNNNN.pt + meta_NNNNNN.json) nor a config.json"
    )
