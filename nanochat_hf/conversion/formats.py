"""Recognising a model folder's format, and writing a folder so that it appears whole or not at all."""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UserInputError


FORMATS = ("nanochat", "native", "hf")
NATIVE_MODEL_TYPE = "nanochat"  # transformers' built-in port
HF_MODEL_TYPE = "nanochat_hf"  # this package


def read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise UserInputError(f"{path}: not valid JSON ({err})") from None


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


@contextlib.contextmanager
def write_folder_atomically(destination: str | os.PathLike):
    """Yield a temporary folder beside `destination`; rename it into place only if the block succeeds.

    A failure (or a kill) part-way leaves `destination` untouched: at worst a hidden `.NAME.tmp-*`
    folder remains, never a half-written `destination`.
    """
    destination = Path(destination)
    if destination.exists():
        raise UserInputError(f"{destination}: already exists; choose a new destination or remove it first")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
    try:
        yield tmp
        os.replace(tmp, destination)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
