"""Opening a model or tokenizer folder - a local path or a Hub id - in one place, with one set of errors.

Every stage that reads a saved model goes through here: pretraining (continuing a model, its tokenizer),
SFT, chat, adapters and conversion. What can go wrong is reported once, the same way everywhere, as a
`UserInputError` that names the flag and the location:

- a local path that does not exist says so (transformers would try it as a Hub id and answer "Repo id
  must be in the form 'repo_name' or 'namespace/repo_name'"), also `runs/missing` when `runs/` is a local
  folder, before anything asks the Hub;
- a folder in another format (a nanochat checkpoint, transformers' built-in NanoChat) names the
  `nanochat-hf convert` command that turns it into this package's format;
- a name that is not on disk and cannot be fetched from the Hub (or not offline) says both;
- a tokenizer whose vocabulary differs from the model's is refused before anything large is loaded;
- before a model is built, its config and weight files are checked (`check_weight_files`): config.json must
  be a JSON object; each safetensors file must have a readable header of floating-point tensors; and the
  config must not describe more parameters than the files hold (a `n_layer: 100000000` would otherwise
  allocate gigabytes before anything is said). A config beyond `MAX_PARAMETERS` is refused outright.

Folders saved before the classes were renamed (`architectures: ["NanoChatForCausalLM"]`, an `auto_map` naming
`NanoChatConfig` / `NanoChatForCausalLM`, the same `model_type`) open here unchanged: the model class is chosen
by this module, never from `architectures`, and saving again writes the new names.
"""

import os
import re
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers import PretrainedConfig

from . import auto_classes  # noqa: F401 (registers the model with the Auto classes; saved folders get auto_map)
from .configuration_nanochat_hf import NanoChatHFConfig
from .errors import UserInputError
from .formats import HF_MODEL_TYPE, detect_format, read_json
from .modeling_nanochat_hf import NanoChatHFForCausalLM
from .tokenization_nanochat_hf import NanoChatHFTokenizer


# A Hub repository id: "name" or "owner/name", letters, digits, '-', '_' and '.'.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Far beyond any nanochat (the released d32 has 1.9e9): a config above it is a typo, refused before building.
MAX_PARAMETERS = 10**13
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


def minimum_parameters(config) -> int:
    """A lower bound of a config's parameter count from its numbers alone (no model is built): the MLP
    matrices (8 n_embd^2 per block) and the token embedding."""
    return config.n_layer * 8 * config.n_embd**2 + config.vocab_size * config.n_embd


def check_config_size(config, location, what: str) -> None:
    if minimum_parameters(config) > MAX_PARAMETERS:
        raise UserInputError(
            f"{what} {location}: config.json describes at least {minimum_parameters(config):.3g} parameters "
            f"(n_layer {config.n_layer}, n_embd {config.n_embd}, vocab_size {config.vocab_size}); "
            f"more than {MAX_PARAMETERS:.0e} is not a nanochat model"
        )


def weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise UserInputError(f"{index}: no 'weight_map' object")
        return [folder / name for name in sorted(set(map(str, weight_map.values())))]
    return [folder / "model.safetensors"] if (folder / "model.safetensors").exists() else []


def check_weight_files(folder, config, what: str) -> None:
    """A local model folder's safetensors files: readable, floating point, and holding what the config says."""
    folder = Path(folder)
    stored = 0
    for path in weight_files(folder):
        if path.is_dir():
            raise UserInputError(f"{what} {folder}: {path.name} is a folder, expected a safetensors file")
        if not path.is_file():
            raise UserInputError(f"{what} {folder}: {path.name} is missing")
        try:
            with safe_open(str(path), framework="pt") as weights:
                for key in weights.keys():
                    tensor = weights.get_slice(key)
                    if tensor.get_dtype() not in FLOAT_DTYPES:
                        raise UserInputError(
                            f"{path}: tensor {key} is {tensor.get_dtype()}; expected floating-point weights "
                            "(float32, bfloat16 or float16)"
                        )
                    numel = 1
                    for size in tensor.get_shape():
                        numel *= size
                    stored += numel
        except (SafetensorError, OSError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise UserInputError(f"{path}: not a readable safetensors file ({reason})") from None
        if stored and minimum_parameters(config) > stored:
            raise UserInputError(
                f"{what} {folder}: config.json describes at least {minimum_parameters(config):,} parameters "
                f"(n_layer {config.n_layer}, n_embd {config.n_embd}) but the weight files hold {stored:,}"
            )


def check_location(location, what: str) -> str:
    """`location` as a string, refused at once when it can only be a local path and does not exist."""
    text = str(location)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserInputError(f"{what} {text}: is a file, expected a model or tokenizer folder")
        return str(path)
    if not HUB_ID.match(text):
        raise UserInputError(f"{what} {text}: the folder does not exist")
    parent = text.split("/", 1)[0]
    if "/" in text and Path(parent).expanduser().is_dir():
        # `runs/d20` next to a local `runs/` folder is a path that is missing, not a Hub repository.
        raise UserInputError(
            f"{what} {text}: the folder does not exist (not read as a Hub id: {parent}/ is a local folder)"
        )
    return text


def _load_error(what: str, location: str, thing: str, err: Exception) -> UserInputError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if not os.path.isdir(location):
        return UserInputError(
            f"{what} {location}: no such local folder, and {thing} could not be loaded from the Hub ({reason})"
        )
    return UserInputError(f"{what} {location}: cannot load {thing} ({reason})")


def _check_format(location: str, what: str) -> None:
    """A local folder must hold this package's format; other formats name the command that converts them."""
    if os.path.isdir(location):
        found = detect_format(location)
        if found != "hf":
            raise UserInputError(
                f"{what} {location}: a {found} checkpoint; convert it first with "
                f"`nanochat-hf convert {location} NEW_FOLDER`"
            )


def open_config(location, what: str = "--model_name_or_path", check_format: bool = True) -> NanoChatHFConfig:
    """The `NanoChatHFConfig` of a saved model (folder or Hub id). `check_format=False` when the caller has
    already decided the folder's format (e.g. `nanochat-hf convert --from hf` on a folder holding two)."""
    location = check_location(location, what)
    if check_format:
        _check_format(location, what)
    if os.path.exists(os.path.join(location, "config.json")):
        read_json(Path(location) / "config.json")  # a folder, bad UTF-8 or a JSON list: one clear error
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(location)
    except (OSError, ValueError) as err:
        raise _load_error(what, location, "its config", err) from None
    if config_dict.get("model_type") != HF_MODEL_TYPE:
        raise UserInputError(
            f"{what} {location}: model_type {config_dict.get('model_type')!r}, expected {HF_MODEL_TYPE!r}"
        )
    try:
        config = NanoChatHFConfig.from_pretrained(location)
    except (OSError, ValueError, TypeError) as err:
        raise _load_error(what, location, "its config", err) from None
    check_config_size(config, location, what)
    return config


def open_model(location, what: str = "--model_name_or_path", **from_pretrained_kwargs) -> NanoChatHFForCausalLM:
    """A saved `NanoChatHFForCausalLM` (folder or Hub id); keyword arguments go to `from_pretrained`."""
    location = check_location(location, what)
    _check_format(location, what)
    config = from_pretrained_kwargs.get("config") or open_config(location, what, check_format=False)
    check_config_size(config, location, what)
    if os.path.isdir(location):
        check_weight_files(location, config, what)
    try:
        return NanoChatHFForCausalLM.from_pretrained(location, **from_pretrained_kwargs)
    except (OSError, ValueError, SafetensorError) as err:
        raise _load_error(what, location, "a nanochat model", err) from None


def open_tokenizer(location, what: str = "--tokenizer_name_or_path"):
    """A saved tokenizer (folder or Hub id), as `NanoChatHFTokenizer` (chat rendering keeps message text ordinary)."""
    location = check_location(location, what)
    try:
        return NanoChatHFTokenizer.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise _load_error(what, location, "a tokenizer", err) from None


def check_vocabulary(num_tokens: int, config, model_location) -> None:
    """The tokenizer (of `num_tokens` tokens) must have exactly the model's vocabulary."""
    if config.vocab_size != num_tokens:
        raise UserInputError(
            f"tokenizer has {num_tokens} tokens but the model {model_location} has vocab_size "
            f"{config.vocab_size}; use the tokenizer the model was trained with"
        )
