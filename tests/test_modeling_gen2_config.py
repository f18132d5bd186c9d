"""Generation-2 configuration: presets, window pattern, value-embedding placement, padded vocabulary, errors."""

import pytest
import torch

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.configuration_nanochat_hf import window_lefts


# (depth, width, heads, short-window layers, long-window layers) for sequence_len 2048 and pattern SSSL.
GEN2_SHAPES = [
    ("d12", 768, 6, 9, 3),
    ("d20", 1280, 10, 15, 5),
    ("d21", 1408, 11, 15, 6),
    ("d24", 1536, 12, 18, 6),
    ("d26", 1664, 13, 19, 7),
    ("d32", 2048, 16, 24, 8),
]


@pytest.mark.parametrize("preset, width, heads, short, long", GEN2_SHAPES)
def test_gen2_presets_follow_the_width_rule_and_tile_the_window_pattern(preset, width, heads, short, long):
    config = NanoChatHFConfig.from_preset(preset, generation=2)
    assert (config.n_embd, config.n_head, config.n_kv_head, config.head_dim) == (width, heads, heads, 128)
    assert (config.vocab_size, config.padded_vocab_size, config.rope_theta, config.qk_scale) == (
        32768,
        32768,
        100000.0,
        1.2,
    )
    lefts = config.window_lefts
    assert lefts.count(512) == short and lefts.count(2048) == long and lefts[-1] == 2048


def test_generation1_stays_the_default():
    config = NanoChatHFConfig.from_preset("d20")
    assert config.generation == 1 and not config.uses_generation2_features
    assert (config.vocab_size, config.rope_theta, config.rotary_dtype, config.qk_scale) == (
        65536,
        10000.0,
        "bfloat16",
        1.0,
    )
    assert config.value_embedding_layers == [] and set(config.window_lefts) == {2048}
    with pytest.raises(ValueError, match="d24"):
        NanoChatHFConfig.from_preset("d24x")


def test_window_lefts_by_hand():
    # short window: ceil(sequence_len / 4 / 128) * 128; pattern tiled; the last layer is always long.
    assert window_lefts("SSSL", 6, 2048) == [512, 512, 512, 2048, 512, 2048]
    assert window_lefts("SL", 3, 1000) == [256, 1000, 1000]
    assert window_lefts("S", 2, 512) == [128, 512]
    assert window_lefts("L", 3, 64) == [64, 64, 64]


@pytest.mark.parametrize("n_layer, layers", [(4, [1, 3]), (5, [0, 2, 4]), (1, [0]), (20, list(range(1, 20, 2)))])
def test_value_embeddings_sit_on_alternate_layers_ending_with_the_last(n_layer, layers):
    config = NanoChatHFConfig(generation=2, n_layer=n_layer, n_embd=64, n_head=4, vocab_size=100, sequence_len=64)
    assert config.value_embedding_layers == layers
    model = NanoChatHFForCausalLM(config)
    assert sorted(int(i) for i in model.transformer.value_embeds) == layers
    assert [i for i, block in enumerate(model.transformer.h) if block.attn.ve_gate is not None] == layers
    assert model.transformer.value_embeds[str(layers[0])].weight.shape == (
        128,
        64,
    )  # padded vocab rows, n_kv_head * head_dim


@pytest.mark.parametrize("n_layer, backout", [(1, 0), (4, 2), (5, 2), (24, 12)])
def test_backout_layer_is_half_the_depth_rounded_down(n_layer, backout):
    config = NanoChatHFConfig(generation=2, n_layer=n_layer, n_embd=64, n_head=4, vocab_size=100, sequence_len=64)
    assert config.backout_layer == backout


def test_vocab_is_padded_to_a_multiple_of_64():
    config = NanoChatHFConfig(generation=2, n_layer=2, n_embd=64, n_head=4, vocab_size=200, sequence_len=64)
    assert config.padded_vocab_size == 256
    model = NanoChatHFForCausalLM(config)
    assert model.transformer.wte.weight.shape[0] == model.lm_head.weight.shape[0] == 256
    assert NanoChatHFConfig(generation=2, vocab_size=256, n_layer=1, n_embd=64, n_head=4).padded_vocab_size == 256


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(window_pattern="SSXL"), "window_pattern.*S .*L.*'SSXL'"),
        (dict(window_pattern="sssl"), "window_pattern"),
        (dict(window_pattern=""), "window_pattern"),
        (dict(pad_vocab_size_to=0), "pad_vocab_size_to"),
        (dict(generation=3), "generation"),
        (dict(n_embd=16, n_head=2), "smear needs `n_embd` >= 24"),
    ],
)
def test_bad_generation2_settings_fail_at_config_time(kwargs, message):
    base = dict(generation=2, n_layer=2, n_embd=64, n_head=4, vocab_size=100, sequence_len=64)
    with pytest.raises(ValueError, match=message):
        NanoChatHFConfig(**{**base, **kwargs})


# Totals of nanochat's `num_scaling_params()` (vocabulary 32,768, pattern SSSL, sequence 2048).
GEN2_TOTALS = {"d12": 286_261_730, "d20": 896_533_746, "d24": 1_384_122_122, "d32": 2_818_575_450}


@pytest.mark.parametrize("preset", sorted(GEN2_TOTALS))
def test_gen2_parameter_totals_equal_nanochats(preset):
    with torch.device("meta"):
        model = NanoChatHFForCausalLM(NanoChatHFConfig.from_preset(preset, generation=2))
    assert model.num_parameters() == GEN2_TOTALS[preset]


def test_saved_gen2_config_round_trips(tmp_path):
    config = NanoChatHFConfig(generation=2, n_layer=3, n_embd=64, n_head=4, vocab_size=100, window_pattern="SL")
    config.save_pretrained(tmp_path)
    loaded = NanoChatHFConfig.from_pretrained(tmp_path)
    for name in ("generation", "window_pattern", "value_embeddings", "smear", "backout", "qk_scale", "rope_theta"):
        assert getattr(loaded, name) == getattr(config, name), name
    assert loaded.window_lefts == config.window_lefts and loaded.padded_vocab_size == 128
