"""Batch (tokens per update → gradient accumulation) and horizon, as nanochat generation 1 derives them."""

import pytest
import torch

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.flops import ModelShape, flops_per_token
from nanochat_hf.planning.horizon import gradient_accumulation_steps, num_training_steps, plan_horizon


# nanochat's own printouts: total parameters, iterations at ratio 20 with B = 524,288, training tokens.
SPEC_HORIZONS = {
    "d20": (560_988_160, 21_400, 11_219_763_200),
    "d26": (1_081_999_360, 41_275, 21_639_987_200),
    "d32": (1_879_048_192, 71_680, 37_580_963_840),
}


@pytest.mark.parametrize("preset", sorted(SPEC_HORIZONS))
def test_ratio_horizon_matches_spec(preset):
    with torch.device("meta"):
        model = NanoChatHFForCausalLM(NanoChatHFConfig.from_preset(preset))
    num_params, steps, tokens = SPEC_HORIZONS[preset]
    assert model.num_parameters() == num_params  # all parameters, embeddings included
    horizon = plan_horizon(model.num_parameters(), flops_per_token(ModelShape.from_config(model.config)))
    assert gradient_accumulation_steps(horizon.total_batch_size, 8, 2048, world_size=8) == 4
    assert (horizon.steps, horizon.tokens, horizon.source) == (steps, tokens, "target_param_data_ratio")


@pytest.mark.parametrize("micro_batch, expected", [(32, 1), (16, 2), (8, 4)])
def test_gradient_accumulation_spec_examples(micro_batch, expected):
    # nanochat's reference runs on 8 GPUs at 2048 tokens: d20 (batch 32) → 1, d26 (16) → 2, d32 (8) → 4.
    assert gradient_accumulation_steps(524_288, micro_batch, 2048, world_size=8) == expected


def test_gradient_accumulation_single_gpu():
    assert gradient_accumulation_steps(524_288, 8, 2048) == 32


def test_batch_that_does_not_divide_names_the_values():
    with pytest.raises(UserInputError) as error:
        gradient_accumulation_steps(524_288, 8, 2048, world_size=3)
    message = str(error.value)
    for fragment in (
        "total_batch_size=524288",
        "per_device_train_batch_size (8)",
        "sequence_len (2048)",
        "world_size (3)",
        "49152",
    ):
        assert fragment in message


@pytest.mark.parametrize("name", ["per_device_train_batch_size", "sequence_len", "world_size", "total_batch_size"])
def test_non_positive_batch_settings_raise(name):
    values = {"total_batch_size": 1024, "per_device_train_batch_size": 2, "sequence_len": 64, "world_size": 1}
    values[name] = 0
    with pytest.raises(UserInputError, match=name):
        gradient_accumulation_steps(**values)


def test_horizon_precedence():
    n, batch = 1_000_000, 1000
    assert num_training_steps(n, batch, max_steps=7, target_tokens=50_000) == (7, "max_steps")
    assert num_training_steps(n, batch, target_tokens=50_500) == (50, "target_tokens")  # rounded down
    assert num_training_steps(n, batch) == (20_000, "target_param_data_ratio")
    assert num_training_steps(n, batch, target_param_data_ratio=2.5) == (2_500, "target_param_data_ratio")


def test_missing_or_too_small_horizon_raises():
    with pytest.raises(UserInputError, match="no training horizon"):
        num_training_steps(1000, 1000, target_param_data_ratio=0)
    with pytest.raises(UserInputError, match="target_tokens"):
        num_training_steps(1000, 1000, target_tokens=999)
    with pytest.raises(UserInputError, match="target_param_data_ratio"):
        num_training_steps(10, 1000)


def test_plan_reports_tokens():
    horizon = plan_horizon(1_000_000, 6_000_000, total_batch_size=1024, max_steps=30)
    assert gradient_accumulation_steps(1024, 2, 64, world_size=2) == 4
    assert horizon.tokens == 30_720 and horizon.total_flops == 30_720 * 6_000_000
    summary = horizon.to_dict()
    assert summary["tokens_per_param"] == pytest.approx(0.03072)
    assert summary["source"] == "max_steps" and horizon.describe_source() == "30 steps"
