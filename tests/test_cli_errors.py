"""Bad input through the command line and the recipes: one line naming the file, key or flag and what was
expected, exit status 2, no traceback (nanochat_hf/cli.py, errors.py, loading.py, commands/*, conversion/,
training/validation.py). `--debug` shows the traceback."""

import contextlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from chat_helpers import chat_args, save_tiny_model
from helpers import tiny_pretrain_argv
from transformers import AutoTokenizer

from nanochat_hf.cli import main as cli_main
from nanochat_hf.errors import UserInputError
from nanochat_hf.training.sft import run_sft


REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("cli") / "good")


def one_line_error(capsys, *needles) -> str:
    """The one error line (progress bars of loading may precede it), with every needle, and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    for needle in needles:
        assert needle in errors[0], err
    return errors[0]


def config_with(**changes):
    def edit(folder: Path):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))

    return edit


def write(name: str, data: bytes):
    return lambda folder: (folder / name).write_bytes(data)


def make_dir(name: str):
    def edit(folder: Path):
        (folder / name).unlink()
        (folder / name).mkdir()

    return edit


def int8_weights(folder: Path):
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v.to(torch.int8) for k, v in weights.items()}, str(folder / "model.safetensors"))


def nan_weights(folder: Path):
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, str(folder / "model.safetensors"))


@pytest.mark.parametrize(
    "edit, expected",
    [
        (write("model.safetensors", b""), "model.safetensors: not a readable safetensors file"),
        (write("model.safetensors", b"\x08" + b"\x00" * 99), "model.safetensors: not a readable safetensors file"),
        (make_dir("model.safetensors"), "model.safetensors is a folder"),
        (write("config.json", b""), "config.json: not valid JSON"),
        (write("config.json", b"[1, 2]"), "config.json: holds a JSON list, expected an object"),
        (write("config.json", b"\xff\xfe{"), "config.json: not UTF-8 text"),
        (make_dir("config.json"), "config.json: is a folder"),
        (config_with(n_layer=100_000_000), "config.json describes at least"),  # refused before allocating
        (int8_weights, "is I8; expected floating-point weights"),
        (nan_weights, "holds NaN or infinite values"),
    ],
)
def test_a_broken_model_folder_is_one_line(good_model, tmp_path, capsys, edit, expected):
    folder = tmp_path / "model"
    shutil.copytree(good_model, folder)
    edit(folder)
    assert cli_main(["chat", str(folder), "--prompt", "hi", "--max-new-tokens", "1"]) == 2
    one_line_error(capsys, expected)


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--device", "bogus"], "--device 'bogus': not a device"),
        (["--top-k", "-5"], "--top-k must be >= 0"),
        (["--temperature", "nan"], "--temperature must be a finite number"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be positive"),
    ]
    + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "CUDA is not available")]),
)
def test_bad_chat_flags_are_refused_before_loading(tmp_path, capsys, flags, expected):
    # The model does not even exist: the flags are checked first.
    assert cli_main(["chat", str(tmp_path / "absent"), "--prompt", "hi", *flags]) == 2
    one_line_error(capsys, expected)


def test_a_nonexistent_local_path_says_the_folder_does_not_exist(tmp_path, capsys):
    assert cli_main(["chat", str(tmp_path / "no" / "such"), "--prompt", "hi"]) == 2
    one_line_error(capsys, "the folder does not exist")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(UserInputError, match="the folder does not exist"):
        cli_main(["--debug", "chat", str(tmp_path / "absent"), "--prompt", "hi"])


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--depth", "100000"], "--depth must be in [1, 512]"),  # refused at once, not searched for minutes
        (["--depth", "4", "--tokens", "nan"], "--target-tokens must be a finite number"),
        (["--depth", "4", "--tokens", "inf"], "--target-tokens must be a finite number"),
        (["--depth", "4", "--tokens", "-5"], "--target-tokens must be in (0, inf]"),
        (["--depth", "4", "--gpu", ""], "--gpu is empty"),
        (["--depth", "4", "--total-batch-size", "0"], "--total-batch-size must be in [1, inf]"),
    ],
)
def test_bad_plan_flags(capsys, flags, expected):
    with pytest.warns(FutureWarning) if "--tokens" in flags else contextlib.nullcontext():
        assert cli_main(["plan", *flags]) == 2
    one_line_error(capsys, expected)


# ---------------------------------------------------------------------------------------------------------
# Conversion


def test_conversions_keep_the_tokenizer(good_model, tmp_path, capsys):
    native, back = tmp_path / "native", tmp_path / "back"
    assert cli_main(["convert", str(good_model), str(native), "--to", "native"]) == 0
    assert cli_main(["convert", str(native), str(back)]) == 0
    original = AutoTokenizer.from_pretrained(good_model)
    for folder in (native, back):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert tokenizer.get_vocab() == original.get_vocab()
        assert tokenizer("Hello world")["input_ids"] == original("Hello world")["input_ids"]


def test_a_destination_below_a_file_is_refused_before_converting(good_model, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    assert cli_main(["convert", str(good_model), str(tmp_path / "file.txt" / "out")]) == 2
    one_line_error(capsys, "file.txt is a file")


def test_converting_non_finite_weights_warns(good_model, tmp_path, caplog):
    folder = tmp_path / "nan"
    shutil.copytree(good_model, folder)
    nan_weights(folder)
    with caplog.at_level("WARNING"):
        assert cli_main(["convert", str(folder), str(tmp_path / "out")]) == 0
    assert "hold NaN or infinite values" in caplog.text


META_KEYS = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")


def write_nanochat_checkpoint(folder: Path, model_folder: Path, legacy: bool = False, n_layer=None) -> None:
    from safetensors.torch import load_file

    folder.mkdir()
    config = json.loads((model_folder / "config.json").read_text())
    state_dict = load_file(str(model_folder / "model.safetensors"))
    torch.save(state_dict, folder / "model_000005.pt", _use_new_zipfile_serialization=not legacy)
    model_config = {k: config[k] for k in META_KEYS}
    if n_layer is not None:
        model_config["n_layer"] = n_layer
    (folder / "meta_000005.json").write_text(json.dumps({"step": 5, "model_config": model_config}))


def test_a_legacy_non_zip_nanochat_checkpoint_converts(good_model, tmp_path):
    src = tmp_path / "legacy"
    write_nanochat_checkpoint(src, good_model, legacy=True)
    assert (src / "model_000005.pt").read_bytes()[:2] != b"PK"
    assert cli_main(["convert", str(src), str(tmp_path / "out")]) == 0
    from safetensors.torch import load_file

    converted, original = (
        load_file(str(tmp_path / "out" / "model.safetensors")),
        load_file(str(good_model / "model.safetensors")),
    )
    assert all(torch.equal(converted[k], original[k]) for k in original)


def test_a_huge_n_layer_in_meta_is_refused_at_once(good_model, tmp_path, capsys):
    src = tmp_path / "huge"
    write_nanochat_checkpoint(src, good_model, n_layer=100_000_000)
    assert cli_main(["convert", str(src), str(tmp_path / "out")]) == 2
    one_line_error(capsys, "model_000005.pt", "n_layer 100000000", "describes at least")


class _Hostile:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_hostile_pickle_is_refused_in_one_line(good_model, tmp_path, capsys, legacy):
    src = tmp_path / "hostile"
    write_nanochat_checkpoint(src, good_model)
    torch.save({"x": _Hostile()}, src / "model_000005.pt", _use_new_zipfile_serialization=not legacy)
    assert cli_main(["convert", str(src), str(tmp_path / "out")]) == 2
    err = one_line_error(capsys, "model_000005.pt: refused", "only weights-only files are read")
    assert "weights_only=False" not in err and "this must never run" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------
# merge-lora


@pytest.fixture(scope="module")
def two_layer_adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter")
    base = save_tiny_model(root / "base", chat=False)
    overrides = dict(use_peft=True, lora_r=2, lora_alpha=4, learning_rate=1e-3, max_steps=1)
    return run_sft(*chat_args(root / "run", base, **overrides))


def test_merging_a_deeper_adapter_onto_a_shallower_base_is_refused(two_layer_adapter, tmp_path, capsys):
    shallow = save_tiny_model(tmp_path / "shallow", chat=False, n_layer=1)
    adapter = tmp_path / "adapter"
    shutil.copytree(two_layer_adapter, adapter)
    (adapter / "nanochat_base.json").unlink()  # only the weights themselves can tell
    assert cli_main(["merge-lora", str(adapter), str(tmp_path / "merged"), "--base", str(shallow)]) == 2
    one_line_error(capsys, "module(s) the base lacks", "transformer.h.1.")
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize(
    "name, data, expected",
    [
        ("adapter_config.json", b"{not json", "adapter_config.json: not valid JSON"),
        ("adapter_model.safetensors", b"\x00" * 10, "adapter_model.safetensors: not a readable safetensors file"),
    ],
)
def test_merge_lora_with_a_broken_adapter_file(two_layer_adapter, tmp_path, capsys, name, data, expected):
    adapter = tmp_path / "adapter"
    shutil.copytree(two_layer_adapter, adapter)
    (adapter / name).write_bytes(data)
    assert cli_main(["merge-lora", str(adapter), str(tmp_path / "merged")]) == 2
    one_line_error(capsys, expected)


# ---------------------------------------------------------------------------------------------------------
# Recipes


def recipe_main(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "recipes"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "recipes"))
    return module.main


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["--matrix_lr", "nan"], "--matrix_lr must be a finite number, got nan"),
        (["--embedding_lr", "inf"], "--embedding_lr must be a finite number, got inf"),
        (["--max_steps", "-5"], "--max_steps must be in [-1, inf]"),
        (["--save_strategy", "steps", "--save_steps", "0"], "--save_steps must be in (0, inf]"),
        (["--save_strategy", "steps", "--save_steps", "-1"], "--save_steps must be in (0, inf]"),
        (["--eval_every", "-1"], "--eval_every must be in [0, inf]"),
        (["--logging_steps", "0"], "logging_steps"),
        (["--attn_implementation", "bogus"], "--attn_implementation must be one of"),
        (["--no_such_flag", "1"], "--no_such_flag"),
        (["--config", "/no/such/recipe.yaml"], "--config /no/such/recipe.yaml: no such file"),
    ],
)
def test_bad_recipe_settings_are_one_line(tmp_path, tokenizer_dir, capsys, overrides, expected):
    argv = tiny_pretrain_argv(tmp_path / "run", tokenizer_dir) + overrides
    assert recipe_main("pretrain")(argv) == 2
    one_line_error(capsys, expected)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "text, expected",
    [("depth: [1\n", "--config: not valid YAML"), ("depth: 2\nno_such_key: 1\n", "no_such_key")],
)
def test_a_bad_recipe_yaml_is_one_line(tmp_path, capsys, text, expected):
    config = tmp_path / "recipe.yaml"
    config.write_text(text)
    assert recipe_main("pretrain")(["--config", str(config), "--output_dir", str(tmp_path / "run")]) == 2
    one_line_error(capsys, expected)


def test_a_full_disk_while_converting_is_one_line_and_leaves_nothing(good_model, tmp_path, capsys, monkeypatch):
    import errno
    import os

    import transformers.modeling_utils

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    assert cli_main(["convert", str(good_model), str(tmp_path / "out")]) == 1
    one_line_error(capsys, "no space left on /", str(tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []
