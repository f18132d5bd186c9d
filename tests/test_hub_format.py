import json
import os
import subprocess
import sys

import torch
from helpers import REMOTE_LOAD_SCRIPT, intercept_hub_uploads, randomize_
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM, NanoChatHFModel


def test_auto_classes_know_the_model_in_process(tiny_config, tmp_path):
    assert isinstance(AutoConfig.for_model("nanochat_hf"), NanoChatHFConfig)
    assert isinstance(AutoModelForCausalLM.from_config(tiny_config), NanoChatHFForCausalLM)
    assert isinstance(AutoModel.from_config(tiny_config), NanoChatHFModel)


def test_save_pretrained_writes_safetensors_code_and_auto_map(tiny_config, tmp_path):
    NanoChatHFForCausalLM(tiny_config).save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors", "configuration_nanochat_hf.py", "modeling_nanochat_hf.py"} <= files
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "nanochat_hf"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_nanochat_hf.NanoChatHFConfig",
        "AutoModel": "modeling_nanochat_hf.NanoChatHFModel",
        "AutoModelForCausalLM": "modeling_nanochat_hf.NanoChatHFForCausalLM",
    }


def test_checkpoint_loads_with_remote_code_where_package_is_absent(tiny_config, tmp_path):
    model = randomize_(NanoChatHFForCausalLM(tiny_config)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    # Run from an empty folder so the repository checkout is not importable by accident.
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD_SCRIPT, str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["module"].startswith("transformers_modules.")
    assert loaded["trunk"] == "NanoChatHFModel"
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        expected = model(ids).logits[0, -1, :8]
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, atol=1e-5, rtol=0)
    generated = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert loaded["generated"] == generated[0].tolist()


def test_push_to_hub_uploads_the_saved_folder(tiny_config, monkeypatch):
    """The real `push_to_hub` path, intercepted only where it would reach the network."""
    uploaded = intercept_hub_uploads(monkeypatch)
    NanoChatHFForCausalLM(tiny_config).push_to_hub("someone/nanochat-tiny")
    assert {"config.json", "model.safetensors", "configuration_nanochat_hf.py", "modeling_nanochat_hf.py"} <= set(
        uploaded
    )
    assert json.loads(uploaded["config.json"])["auto_map"]["AutoModelForCausalLM"].endswith("NanoChatHFForCausalLM")


def test_bfloat16_save_and_reload_keeps_weights(tiny_config, tmp_path):
    model = randomize_(NanoChatHFForCausalLM(tiny_config)).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="auto")
    assert isinstance(reloaded, NanoChatHFForCausalLM)
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        assert b.dtype == torch.bfloat16 and torch.equal(a, b), name
