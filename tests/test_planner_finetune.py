"""Memory plan of chat fine-tuning: full, LoRA, QLoRA on a 12 GB card, checked against real peft/bitsandbytes."""

import pytest
import torch
from chat_helpers import save_tiny_model

from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.finetune import lora_parameter_count, main, nf4_bytes, plan_finetune, render_finetune_plan
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
    assert main(["--depth", "20", "--gpu", "rtx4070"]) == 0
    out = capsys.readouterr().out
    assert out.count("fine-tune on rtx4070") == 3
