"""Opening model and tokenizer folders, local or Hub ids, with one set of errors (nanochat_hf/loading.py),
and the stages that go through it (pretraining, SFT, chat, conversion) reporting them the same way."""

import json

import pytest
import torch
from chat_helpers import chat_args, save_tiny_model
from helpers import tiny_pretrain_argv
from transformers import NanoChatConfig as NativeConfig
from transformers import NanoChatForCausalLM as NativeForCausalLM

from nanochat_hf.cli import main as cli_main
from nanochat_hf.conversion import config_to_native
from nanochat_hf.errors import UserInputError
from nanochat_hf.loading import check_location, check_vocabulary, open_config, open_model, open_tokenizer
from nanochat_hf.training import parse_pretrain_arguments, run_pretraining
from nanochat_hf.training.sft import run_sft


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("loading") / "model")


def test_a_saved_folder_opens(model_dir):
    config = open_config(model_dir)
    model = open_model(model_dir, dtype=torch.float32)
    tokenizer = open_tokenizer(model_dir)
    assert config.vocab_size == model.config.vocab_size == len(tokenizer)
    check_vocabulary(len(tokenizer), config, model_dir)


def test_a_local_path_that_does_not_exist_says_so(tmp_path):
    for location in (tmp_path / "missing", "./runs/nothing/here/final", "~/no-such-model"):
        for opener in (open_config, open_model, open_tokenizer):
            with pytest.raises(UserInputError, match="the folder does not exist") as error:
                opener(location, "--model_name_or_path")
            assert str(location) in str(error.value) and "Repo id must be" not in str(error.value)


def test_a_missing_folder_under_a_local_folder_is_not_looked_up_on_the_hub(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserInputError, match="runs/does-not-exist: the folder does not exist .*runs/ is a local"):
        check_location("runs/does-not-exist", "model")
    assert cli_main(["chat", "runs/does-not-exist", "--prompt", "hi"]) == 2
    assert "model runs/does-not-exist: the folder does not exist" in capsys.readouterr().err
    # Without a local `runs/`, the same text is a Hub id and goes on to the Hub.
    assert check_location("someone/does-not-exist", "model") == "someone/does-not-exist"


def test_a_name_neither_on_disk_nor_reachable_on_the_hub_says_both():
    # Tests run offline (HF_HUB_OFFLINE=1): a Hub id cannot be fetched.
    with pytest.raises(UserInputError, match="someone/no-such-model: no such local folder, and its config could not"):
        open_config("someone/no-such-model")
    assert check_location("someone/no-such-model", "--x") == "someone/no-such-model"


def test_a_file_and_other_formats_are_refused_with_what_to_do(tmp_path, model_dir):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(UserInputError, match="is a file, expected a model or tokenizer folder"):
        open_model(tmp_path / "weights.bin")
    native = tmp_path / "native"
    config = open_config(model_dir)
    NativeForCausalLM(NativeConfig(**config_to_native(config, warn=False).to_dict())).save_pretrained(native)
    with pytest.raises(UserInputError, match="a native checkpoint; convert it first with `nanochat-hf convert"):
        open_config(native)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserInputError, match="model_type is 'llama'"):
        open_model(other)


def test_a_tokenizer_of_another_size_is_refused(model_dir):
    with pytest.raises(UserInputError, match=r"tokenizer has 300 tokens but the model .* has vocab_size \d+"):
        check_vocabulary(300, open_config(model_dir), model_dir)


def test_the_stages_report_the_same_errors(tmp_path, capsys):
    missing = tmp_path / "missing"
    with pytest.raises(UserInputError, match=f"--model_name_or_path {missing}: the folder does not exist"):
        run_sft(*chat_args(tmp_path / "run", missing))
    assert cli_main(["chat", str(missing), "--prompt", "hi"]) == 2
    assert f"model {missing}: the folder does not exist" in capsys.readouterr().err
    with pytest.raises(UserInputError, match=f"--tokenizer_name_or_path {missing}: the folder does not exist"):
        run_pretraining(*parse_pretrain_arguments(tiny_pretrain_argv(tmp_path / "pretrain", missing)))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "nanochat_hf", "n_embd": 100, "n_head": 3}))
    assert cli_main(["convert", str(broken), str(tmp_path / "out")]) == 2
    assert f"SRC {broken}: cannot load its config" in capsys.readouterr().err


def test_a_folder_saved_under_the_old_class_names_still_loads_and_resaves_with_the_new(tmp_path, model_dir):
    # Versions before the rename saved `architectures: ["NanoChatForCausalLM"]` (transformers' built-in class
    # name) and an `auto_map` naming `NanoChatConfig` / `NanoChatModel` / `NanoChatForCausalLM`.
    import shutil

    from transformers import AutoModelForCausalLM

    from nanochat_hf import NanoChatForCausalLM, NanoChatHFForCausalLM

    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    config = json.loads((old / "config.json").read_text())
    config["architectures"] = ["NanoChatForCausalLM"]
    config["auto_map"] = {
        "AutoConfig": "configuration_nanochat_hf.NanoChatConfig",
        "AutoModel": "modeling_nanochat_hf.NanoChatModel",
        "AutoModelForCausalLM": "modeling_nanochat_hf.NanoChatForCausalLM",
    }
    (old / "config.json").write_text(json.dumps(config))

    assert NanoChatForCausalLM is NanoChatHFForCausalLM
    model = open_model(old, dtype=torch.float32)
    assert type(model) is NanoChatHFForCausalLM and open_config(old).model_type == "nanochat_hf"
    reference = open_model(model_dir, dtype=torch.float32)
    for (name, ours), (_, theirs) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(ours, theirs), name
    # The folder's own code copy resolves the old names too (trust_remote_code path).
    remote = AutoModelForCausalLM.from_pretrained(old, trust_remote_code=True, dtype=torch.float32)
    assert type(remote).__name__ == "NanoChatHFForCausalLM"

    model.save_pretrained(tmp_path / "resaved")
    saved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert saved["architectures"] == ["NanoChatHFForCausalLM"] and saved["model_type"] == "nanochat_hf"
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_nanochat_hf.NanoChatHFConfig",
        "AutoModel": "modeling_nanochat_hf.NanoChatHFModel",
        "AutoModelForCausalLM": "modeling_nanochat_hf.NanoChatHFForCausalLM",
    }
