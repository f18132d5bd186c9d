"""LoRA and QLoRA fine-tuning on CPU, and `nanochat-hf merge-lora`."""

import json

import pytest
import torch
from chat_helpers import Capture, chat_args, save_tiny_model

from nanochat_hf import NanoChatHFForCausalLM
from nanochat_hf.chat.adapters import load_adapter_model
from nanochat_hf.cli import main as cli_main
from nanochat_hf.training.sft import run_sft


IDS = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]])


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("lora") / "base", seed=1, random_weights=True, chat=False)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, base_dir):
    """A short LoRA SFT (high learning rate, so the adapters move away from their zero start)."""
    output = tmp_path_factory.mktemp("lora") / "run"
    capture = Capture()
    overrides = dict(
        use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=5e-3, max_steps=8, logging_steps=2
    )
    final = run_sft(*chat_args(output, base_dir, **overrides), extra_callbacks=[capture])
    return final, capture


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


def test_lora_targets_every_block_linear_including_both_c_proj(lora_run, base_dir):
    final, capture = lora_run
    adapter_config = json.loads((final / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == ["c_fc", "c_k", "c_proj", "c_q", "c_v"]
    assert adapter_config["base_model_name_or_path"] == str(base_dir)
    model = capture.first_step["model"]
    adapted = {name.split(".lora_A")[0] for name, _ in model.named_parameters() if ".lora_A." in name}
    expected = {
        f"base_model.model.transformer.h.{layer}.{module}"
        for layer in range(2)
        for module in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    assert adapted == expected
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)  # the base, lm_head included, is frozen
    assert capture.losses[-1] < capture.losses[0]
    assert (final / "nanochat_base.json").is_file() and (final / "tokenizer.json").is_file()


def test_merged_model_equals_the_adapter_model(lora_run, base_dir, tmp_path):
    final, _ = lora_run
    merged_dir = tmp_path / "merged"
    assert cli_main(["merge-lora", str(final), str(merged_dir)]) == 0
    adapter_model, _ = load_adapter_model(final)
    merged = NanoChatHFForCausalLM.from_pretrained(merged_dir)
    base = NanoChatHFForCausalLM.from_pretrained(base_dir)
    merged_logits = logits(merged.eval())
    torch.testing.assert_close(merged_logits, logits(adapter_model.eval()), atol=1e-4, rtol=1e-4)
    assert (merged_logits - logits(base.eval())).abs().max() > 1e-3  # the adapter changed the model
    assert not any("lora" in name for name in merged.state_dict())
    generation = json.loads((merged_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"][0] == generation["pad_token_id"] + 4  # <|assistant_end|> is <|bos|> + 4
    assert (merged_dir / "tokenizer.json").is_file() and (merged_dir / "modeling_nanochat_hf.py").is_file()


def test_adapter_on_the_wrong_base_is_refused(lora_run, tmp_path, capsys):
    final, _ = lora_run
    other_weights = save_tiny_model(tmp_path / "other", seed=2, random_weights=True, chat=False)
    assert cli_main(["merge-lora", str(final), str(tmp_path / "a"), "--base", str(other_weights)]) == 2
    assert "same shape but different weights" in capsys.readouterr().err
    other_shape = save_tiny_model(tmp_path / "wider", seed=1, random_weights=True, chat=False, n_embd=128)
    assert cli_main(["merge-lora", str(final), str(tmp_path / "b"), "--base", str(other_shape)]) == 2
    assert "was trained on a base of shape" in capsys.readouterr().err
    # Without the fingerprint file only the shapes can be checked: peft's mismatch becomes a clear error.
    (final / "nanochat_base.json").rename(tmp_path / "fingerprint.json")
    try:
        assert cli_main(["merge-lora", str(final), str(tmp_path / "c"), "--base", str(other_shape)]) == 2
        assert "does not fit the base" in capsys.readouterr().err
    finally:
        (tmp_path / "fingerprint.json").rename(final / "nanochat_base.json")
    assert cli_main(["merge-lora", str(tmp_path), str(tmp_path / "d")]) == 2
    assert "not a LoRA adapter folder" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_merge_refuses_an_existing_destination(lora_run, tmp_path, capsys):
    final, _ = lora_run
    (tmp_path / "taken").mkdir()
    assert cli_main(["merge-lora", str(final), str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_qlora_trains_on_cpu_with_a_4bit_base(tmp_path, base_dir):
    import bitsandbytes as bnb

    capture = Capture()
    overrides = dict(
        use_peft=True,
        load_in_4bit=True,
        use_bnb_nested_quant=True,
        dtype="bfloat16",
        lora_r=4,
        learning_rate=5e-3,
        max_steps=4,
    )
    final = run_sft(*chat_args(tmp_path / "run", base_dir, **overrides), extra_callbacks=[capture])
    model = capture.first_step["model"]
    block_linears = [m for name, m in model.named_modules() if name.endswith(("c_q.base_layer", "c_fc.base_layer"))]
    assert block_linears and all(isinstance(m, bnb.nn.Linear4bit) for m in block_linears)
    assert all(m.weight.quant_state.quant_type == "nf4" for m in block_linears)
    assert not isinstance(model.get_base_model().lm_head, bnb.nn.Linear4bit)  # the head is kept out of 4-bit
    assert all(torch.isfinite(torch.tensor(loss)) for loss in capture.losses)
    # The adapter merges into the full-precision base.
    assert cli_main(["merge-lora", str(final), str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "model.safetensors").is_file()


def test_chat_cli_runs_an_adapter_folder(lora_run, capsys):
    final, _ = lora_run
    assert (
        cli_main(["chat", str(final), "--prompt", "What is 2+2?", "--temperature", "0", "--max-new-tokens", "5"]) == 0
    )
    assert capsys.readouterr().out.endswith("\n")
