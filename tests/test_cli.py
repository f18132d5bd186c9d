"""The command line: cheap to start (no torch/transformers for help and plan), every subcommand registered."""

import json
import logging
import os
import subprocess
import sys

import pytest

from nanochat_hf import quiet
from nanochat_hf.cli import COMMAND_MODULES, build_parser, main


HEAVY = ("torch", "transformers", "trl", "accelerate", "peft", "bitsandbytes", "datasets")


def _heavy_modules_after(code: str) -> list[str]:
    script = f"import sys\n{code}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules) or 'none')"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env={**os.environ}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1].split(",")


def test_importing_the_cli_imports_neither_torch_nor_transformers():
    assert _heavy_modules_after("import nanochat_hf.cli") == ["none"]


def test_help_and_plan_import_neither_torch_nor_transformers():
    code = (
        "from nanochat_hf.cli import build_parser, main\n"
        "build_parser().format_help()\n"
        "assert main(['plan', '--depth', '20', '--gpu', 'rtx4070']) == 0\n"
        "assert main(['plan-finetune', '--depth', '20', '--gpu', 'rtx4070']) == 0"
    )
    assert _heavy_modules_after(code) == ["none"]


def test_model_classes_load_on_first_use_and_register_the_auto_classes():
    code = (
        "import nanochat_hf\n"
        "assert 'torch' not in sys.modules\n"
        "from nanochat_hf import NanoChatHFConfig\n"
        "from transformers import AutoConfig\n"
        "assert type(AutoConfig.for_model('nanochat_hf')) is NanoChatHFConfig"
    )
    assert "transformers" in _heavy_modules_after(code)


def test_unknown_attribute_is_an_attribute_error():
    import nanochat_hf

    with pytest.raises(AttributeError, match="no_such_thing"):
        nanochat_hf.no_such_thing  # noqa: B018


def test_every_command_module_is_registered():
    names = set(build_parser()._subparsers._group_actions[0].choices)
    assert {"plan", "plan-finetune", "chat", "eval", "convert", "report", "merge-lora"} <= names
    assert len(names) == len(COMMAND_MODULES)


def test_plan_json_cites_only_files_of_the_repository(capsys):
    assert main(["plan", "--depth", "32", "--gpu", "rtx4070", "--json"]) == 0
    text = capsys.readouterr().out
    json.loads(text)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for word in text.replace('"', " ").split():
        if word.endswith(".md") and "/" in word:
            assert os.path.exists(os.path.join(repo, word.strip(",.:;()"))), word


def test_the_unused_bitsandbytes_kernel_warning_is_dropped_and_others_pass(caplog):
    quiet.silence_unused_kernel_notices()
    logger = logging.getLogger(quiet.BITSANDBYTES_CPU_LOGGER)
    with caplog.at_level(logging.WARNING, logger=quiet.BITSANDBYTES_CPU_LOGGER):
        logger.warning(quiet.UNUSED_KERNEL_MESSAGE + ": %s. Please make sure ...", "No module named 'kernels'")
        logger.warning("something else went wrong")
    assert [record.getMessage() for record in caplog.records] == ["something else went wrong"]
    assert quiet.DROPPED[-1].startswith(quiet.UNUSED_KERNEL_MESSAGE)


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_torchaos_unused_kernel_notices_are_dropped_and_its_other_messages_pass():
    """torch's own loggers do not propagate to the root: the handler sits on each logger."""
    quiet.silence_unused_kernel_notices()
    torchao, pytree = logging.getLogger(quiet.TORCHAO_LOGGER), logging.getLogger(quiet.PYTREE_LOGGER)
    collect = Collect()
    torchao.addHandler(collect)
    pytree.addHandler(collect)
    try:
        torchao.warning("Failed to load /site-packages/torchao/_C_mxfp8.abi3.so: Could not load this library")
        torchao.warning("Failed to load the model")  # not one of its kernel files: shown
        pytree.warning(
            "%s is an Enum subclass and is now natively supported by torch.compile as an opaque value type.", "E"
        )
        pytree.warning("a pytree problem")
    finally:
        torchao.removeHandler(collect)
        pytree.removeHandler(collect)
    assert collect.messages == ["Failed to load the model", "a pytree problem"]


def test_importing_the_models_with_torchao_installed_prints_nothing():
    pytest.importorskip("torchao")
    script = "import nanochat_hf\nfrom transformers import PreTrainedModel\nimport torchao\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stderr
