"""Generation-2 parameter counts by group and FLOPs per token (planning/flops.py) against nanochat's own
`num_scaling_params()` / `estimate_flops()` for d12..d32, and against our model's real parameters."""

import pytest
import torch
from nanochat_gen2_reference import nanochat_gpt

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.callbacks.throughput import model_flops_per_token
from nanochat_hf.optim.scaling_gen2 import gen2_scaling_params
from nanochat_hf.planning.flops import (
    ModelShape,
    attention_flops_per_token,
    flops_per_token,
    param_counts,
    param_tensors,
)


DEPTHS = [12, 16, 20, 21, 24, 26, 32]
# nanochat's num_scaling_params() and estimate_flops() at vocabulary 32,768, SSSL, sequence 2048, as nanochat
# prints them (cross-checked by instantiating its GPT).
PUBLISHED = {
    12: (286_261_730, 759_696_048),
    20: (896_533_746, 2_886_212_784),
    21: (1_099_367_920, 3_611_697_816),
    24: (1_384_122_122, 4_775_225_616),
    26: (1_681_786_938, 5_991_051_288),
    32: (2_818_575_450, 10_770_991_248),
}


@pytest.mark.parametrize("depth", sorted(PUBLISHED))
def test_totals_and_flops_equal_nanochats_published_figures(depth):
    shape = ModelShape.from_depth(depth, generation=2)
    assert (param_counts(shape).total, flops_per_token(shape)) == PUBLISHED[depth]


@pytest.mark.parametrize("depth", DEPTHS)
def test_groups_and_flops_equal_nanochats_own_model(depth):
    gpt = nanochat_gpt()
    if gpt is None:
        pytest.skip("nanochat's source (the local mirror) is not available")
    config = gpt.GPTConfig(sequence_len=2048, vocab_size=32768, n_layer=depth, **_width(depth))
    with torch.device("meta"):
        reference = gpt.GPT(config)
    shape = ModelShape.from_depth(depth, generation=2)
    assert param_counts(shape).by_group() == reference.num_scaling_params()
    assert flops_per_token(shape) == reference.estimate_flops()
    assert param_counts(shape).matmul == reference.num_matmul_params()


def _width(depth):
    shape = ModelShape.from_depth(depth, generation=2)
    return dict(n_embd=shape.n_embd, n_head=shape.n_head, n_kv_head=shape.n_kv_head)


@pytest.mark.parametrize("overrides", [{}, dict(vocab_size=200, n_kv_head=2, window_pattern="SL", sequence_len=1024)])
def test_param_tensors_list_the_models_parameters_in_order(overrides):
    settings = dict(generation=2, n_layer=5, n_embd=256, n_head=4, vocab_size=32768, sequence_len=2048)
    config = NanoChatHFConfig(**{**settings, **overrides})
    with torch.device("meta"):
        model = NanoChatHFForCausalLM(config)
    listed = [(t.name, t.numel) for t in param_tensors(ModelShape.from_config(config))]
    assert listed == [(name, p.numel()) for name, p in model.named_parameters()]


def test_window_term_and_scaling_params_by_hand():
    shape = ModelShape.from_depth(24, generation=2)  # 18 S layers (512 keys) and 6 L layers (2048 keys)
    assert attention_flops_per_token(shape) == 12 * 12 * 128 * (18 * 512 + 6 * 2048)
    counts = param_counts(shape)
    assert counts.scaling == counts.blocks + counts.lm_head == gen2_scaling_params(24) == 729_810_624
    assert counts.matmul == counts.scaling + 24  # the smear gate is a Linear
    gen1 = ModelShape.from_depth(32)
    assert attention_flops_per_token(gen1) == 12 * 32 * 16 * 128 * 2048  # no windows in generation 1


def test_throughput_callback_counts_generation2_flops():
    with torch.device("meta"):
        model = NanoChatHFForCausalLM(NanoChatHFConfig.from_preset("d24", generation=2))
    assert model_flops_per_token(model, 2048) == PUBLISHED[24][1]
