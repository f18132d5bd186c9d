"""Memory plan of chat fine-tuning: full, LoRA, QLoRA on a 12 GB card, checked against real peft/bitsandbytes."""

import json

import pytest
import torch
from chat_helpers import save_tiny_model

from nanochat_hf.cli import main
from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.finetune import lora_parameter_count, nf4_bytes, plan_finetune, render_finetune_plan
from nanochat_hf.planning.flops import ModelShape
from nanochat_hf.planning.gpus import GIB


def test_d32_on_a_12gb_card():
    full, lora, qlora = (plan_finetune(32, method, gpu="rtx4070") for method in ("full", "lora", "qlora"))
    assert not full.fits and full.total_bytes > 24 * GIB  # fp32 weights + grads + state alone are 22 GiB
    assert lora.fits and qlora.fits
    assert qlora.total_bytes < lora.total_bytes < full.total_bytes
    assert lora.trained_params == qlora.trained_params == lora_parameter_count(ModelShape.from_depth(32), 16)
    # NF4 keeps the block matrices (1.61e9 parameters) in about half a byte each.
    blocks = 12 * 2048 * 2048 * 32
    assert qlora.components["base block weights (NF4, frozen)"] == pytest.approx(blocks / 2, rel=0.04)
    text = render_finetune_plan(qlora)
    assert "fits" in text and "NF4" in text


def test_lora_count_matches_peft(tmp_path):
    from peft import LoraConfig, get_peft_model

    from nanochat_hf import NanoChatHFForCausalLM

    model = NanoChatHFForCausalLM.from_pretrained(save_tiny_model(tmp_path / "m", chat=False))
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["c_q", "c_k", "c_v", "c_proj", "c_fc"]))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert lora_parameter_count(ModelShape.from_config(model.config), 4) == trainable


def test_nf4_bytes_match_bitsandbytes(tmp_path):
    from transformers import BitsAndBytesConfig

    from nanochat_hf import NanoChatHFForCausalLM

    folder = save_tiny_model(tmp_path / "m", chat=False)
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    model = NanoChatHFForCausalLM.from_pretrained(folder, quantization_config=quantization, device_map="cpu")
    for name, module in model.named_modules():
        if name.endswith("attn.c_q") or name.endswith("mlp.c_fc"):
            state = module.weight.quant_state
            stored = (
                module.weight.numel() * module.weight.element_size()
                + state.absmax.numel() * state.absmax.element_size()
            )
            stored += state.state2.absmax.numel() * state.state2.absmax.element_size()
            numel = module.in_features * module.out_features
            assert nf4_bytes(numel) == stored, name
            assert module.weight.dtype == torch.uint8


def test_bad_requests():
    with pytest.raises(UserInputError, match="method 'int3'"):
        plan_finetune(32, "int3")
    with pytest.raises(UserInputError, match="for full fine-tunes"):
        plan_finetune(32, "lora", optimizer="nanochat")


def test_command_line(capsys):
    assert main(["plan-finetune", "--depth", "20", "--gpu", "rtx4070"]) == 0
    out = capsys.readouterr().out
    assert out.count("fine-tune on rtx4070") == 3


def test_command_line_options_and_json(capsys):
    assert (
        main(["plan-finetune", "--depth", "20", "--gpu", "rtx4070", "--method", "lora", "--lora-r", "8", "--json"])
        == 0
    )
    plans = json.loads(capsys.readouterr().out)
    assert [plan["method"] for plan in plans] == ["lora"]
    assert plans[0]["trained_params"] == plan_finetune(20, "lora", lora_r=8).trained_params
    assert plans[0]["total_bytes"] == sum(plans[0]["components"].values())
    # A d32 full fine-tune does not fit a 12 GB card: exit status 1.
    assert main(["plan-finetune", "--depth", "32", "--gpu", "rtx4070", "--method", "full"]) == 1
    assert "does NOT fit" in capsys.readouterr().out


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["plan-finetune", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--depth",
        "--gpu",
        "--method",
        "--micro-batch",
        "--sequence-len",
        "--lora-r",
        "--optimizer",
        "--json",
    ):
        assert flag in out
    assert "LoRA rank" in out


def test_rl_plan_adds_the_rollouts_kv_cache_and_lora_fits_12gb():
    from nanochat_hf.planning.finetune import plan_rl

    lora, qlora, full = (plan_rl(32, method, gpu="rtx4070") for method in ("lora", "qlora", "full"))
    assert lora.fits and qlora.fits and not full.fits
    assert lora.sequence_len == 256 + 256 and lora.micro_batch == 8
    kv = lora.components["rollout KV cache (16 x 512 tokens, bf16)"]
    assert kv == 2 * 32 * 16 * 128 * 16 * 512 * 2  # K and V, 32 layers, 16 heads of 128, 16 samples x 512, bf16
    doubled = plan_rl(32, "lora", num_generations=32)
    assert doubled.components["rollout KV cache (32 x 512 tokens, bf16)"] == 2 * kv
    assert "RL (16 samples x 256 new tokens)" in render_finetune_plan(lora)
    with pytest.raises(UserInputError, match="num_generations must be positive"):
        plan_rl(32, num_generations=0)


def test_rl_kv_cache_bytes_match_the_models_cache(tmp_path):
    from nanochat_hf import NanoChatHFForCausalLM
    from nanochat_hf.planning.finetune import kv_cache_bytes

    model = NanoChatHFForCausalLM.from_pretrained(save_tiny_model(tmp_path / "m", chat=False)).eval()
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        cache = model(torch.zeros(3, 10, dtype=torch.long), use_cache=True).cache
    measured = sum(
        tensor.numel() * tensor.element_size() for layer in cache.layers for tensor in (layer.keys, layer.values)
    )
    assert measured == kv_cache_bytes(ModelShape.from_config(model.config), sequences=3, tokens=10)


def test_rl_command_line(capsys):
    assert main(["plan-finetune", "--depth", "32", "--rl", "--micro-batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "rollout KV cache (16 x 512 tokens, bf16)" in out and "micro-batch 4 x 512" in out
