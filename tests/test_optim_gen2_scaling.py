"""Generation 2's scaling arithmetic: nanochat's published table of batch, LR scale, weight decay and horizon."""

import pytest

from nanochat_hf.errors import UserInputError
from nanochat_hf.optim import Gen2Settings, gen2_scaling_params, plan_gen2, plan_gen2_depth
from nanochat_hf.optim.scaling_gen2 import auto_total_batch_size, gen2_width


# depth, ratio → total batch, batch LR scale, Muon weight decay, updates, tokens (nanochat 2026, vocab 32,768).
TABLE = [
    (12, 12, 524_288, 1.0, 0.28, 2_520, 1_321_205_760),
    (20, 12, 1_048_576, 1.4142, 0.10019, 4_980, 5_221_908_480),
    (24, 12, 1_048_576, 1.4142, 0.05974, 8_352, 8_757_706_752),
    (24, 8, 1_048_576, 1.4142, 0.05974, 5_568, 5_838_471_168),
    (26, 12, 1_048_576, 1.4142, 0.04747, 10_510, 11_020_533_760),
    (32, 12, 2_097_152, 2.0, 0.03675, 9_600, 20_132_659_200),
]


@pytest.mark.parametrize("depth, ratio, batch, bls, weight_decay, iterations, tokens", TABLE)
def test_the_published_table(depth, ratio, batch, bls, weight_decay, iterations, tokens):
    plan = plan_gen2_depth(depth, Gen2Settings(target_param_data_ratio=ratio))
    assert plan.total_batch_size == batch
    assert plan.batch_lr_scale == pytest.approx(bls, abs=5e-5)
    assert plan.weight_decay == pytest.approx(weight_decay, abs=5e-6)
    assert plan.num_iterations == iterations and plan.total_tokens == tokens
    assert plan.horizon_source == "target_param_data_ratio"


def test_widths_and_scaling_params():
    assert [gen2_width(d) for d in (12, 20, 21, 24, 26, 32)] == [
        (768, 6),
        (1280, 10),
        (1408, 11),
        (1536, 12),
        (1664, 13),
        (2048, 16),
    ]
    assert [gen2_scaling_params(d) for d in (12, 20, 21, 24, 26, 32)] == [
        110_100_912,
        435_160_240,
        545_719_724,
        729_810_624,
        918_423_532,
        1_677_724_672,
    ]


def test_effective_d24_learning_rates():
    lrs = plan_gen2_depth(24, Gen2Settings(target_param_data_ratio=8)).group_lrs
    expected = {
        "embedding": 0.3,
        "unembedding": 0.008,
        "value_embeds": 0.15,
        "muon": 0.028284,
        "x0_lambdas": 0.70711,
        "resid_lambdas": 0.0070711,
        "smear_backout": 0.2,
    }
    assert lrs == pytest.approx(expected, rel=5e-5)  # the published values have 5 significant digits


def test_the_batch_depends_on_the_depth_only_and_explicit_settings_win():
    for depth in (12, 20, 32):
        assert (
            plan_gen2_depth(depth, Gen2Settings(target_param_data_ratio=8)).total_batch_size
            == plan_gen2_depth(depth, Gen2Settings(target_param_data_ratio=20)).total_batch_size
        )
    plan = plan_gen2_depth(24, Gen2Settings(total_batch_size=524_288, num_iterations=100))
    assert (plan.total_batch_size, plan.batch_lr_scale, plan.num_iterations, plan.horizon_source) == (
        524_288,
        1.0,
        100,
        "num_iterations",
    )
    assert auto_total_batch_size(10**9, 10**9) == 2**19


def test_target_flops_horizon():
    settings = Gen2Settings(target_flops=2.788e19)
    plan = plan_gen2(
        settings,
        scaling_params=729_810_624,
        reference_scaling_params=110_100_912,
        model_dim=1536,
        flops_per_token=4_775_225_616,
    )
    assert (
        plan.num_iterations == round(2.788e19 / (4_775_225_616 * 1_048_576)) and plan.horizon_source == "target_flops"
    )
    with pytest.raises(UserInputError, match="flops_per_token"):
        plan_gen2(settings, scaling_params=729_810_624, reference_scaling_params=110_100_912, model_dim=1536)


def test_sft_settings():
    settings = Gen2Settings.for_sft(num_iterations=500)
    plan = plan_gen2(
        settings,
        scaling_params=729_810_624,
        reference_scaling_params=110_100_912,
        model_dim=1536,
        total_batch_size=1_048_576,
    )
    assert plan.batch_lr_scale == 1.0 and plan.weight_decay == 0.0 and plan.num_iterations == 500
    s_d = (1536 / 768) ** -0.5
    assert plan.group_lrs["embedding"] == pytest.approx(0.3 * s_d * 0.8)
    assert plan.group_lrs["unembedding"] == pytest.approx(0.004 * s_d * 0.8)
    assert plan.group_lrs["muon"] == pytest.approx(0.016) and plan.group_lrs["smear_backout"] == pytest.approx(0.16)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(target_param_data_ratio=1e-9), "gives no tokens"),
        (
            dict(target_param_data_ratio=0.001, total_batch_size=2**30),
            "gives 0 updates.*raise target_param_data_ratio",
        ),
        (dict(target_param_data_ratio=-1, num_iterations=-1), "no training horizon"),
        (dict(total_batch_size=0), "total_batch_size must be a positive whole number"),
        (dict(matrix_lr=float("nan")), "matrix_lr must be a finite number"),
        (dict(embedding_lr=-0.3), "embedding_lr must be in"),
        (dict(weight_decay=float("inf")), "weight_decay must be a finite number"),
        (dict(warmdown_ratio=2.0), "warmdown_ratio must be in"),
        (dict(momentum_peak=1.0), "momentum_peak must be in"),
        (dict(warmup_steps=2.5), "warmup_steps must be a whole number"),
    ],
)
def test_bad_settings_fail_before_any_work(settings, message):
    with pytest.raises(UserInputError, match=message):
        plan_gen2_depth(12, Gen2Settings(**settings))


def test_unknown_setting_keys_are_named():
    with pytest.raises(UserInputError, match=r"recipe.yaml: unknown key\(s\) \['matrix_learning_rate'\]"):
        Gen2Settings.from_mapping({"matrix_learning_rate": 0.02}, where="recipe.yaml")
