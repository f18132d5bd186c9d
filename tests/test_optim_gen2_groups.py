"""Generation 2's parameter routing, group settings and generation checks (on a stand-in with its names)."""

import types

import pytest
import torch
from gen2_fixtures import Gen2ShapedStandIn
from torch import nn

from nanochat_hf import NanoChatHFForCausalLM
from nanochat_hf.errors import UserInputError
from nanochat_hf.optim import (
    Gen2Settings,
    build_gen2_optimizer,
    build_gen2_training,
    build_optimizer,
    count_gen2_scaling_params,
    gen2_scaling_params,
)
from nanochat_hf.optim.scaling_gen2 import gen2_width


EXPECTED_GROUP = {
    "lm_head.weight": "unembedding",
    "transformer.wte.weight": "embedding",
    "value_embeds.1.weight": "value_embeds",
    "value_embeds.3.weight": "value_embeds",
    "resid_lambdas": "resid_lambdas",
    "x0_lambdas": "x0_lambdas",
    "smear_gate.weight": "smear_backout",
    "smear_lambda": "smear_backout",
    "backout_lambda": "smear_backout",
}
ADAMW_SETTINGS = {  # name: (betas, eps, weight decay)
    "unembedding": ((0.8, 0.96), 1e-10, 0.01),
    "embedding": ((0.8, 0.995), 1e-10, 0.001),
    "value_embeds": ((0.8, 0.995), 1e-10, 0.01),
    "resid_lambdas": ((0.8, 0.95), 1e-10, 0.05),
    "x0_lambdas": ((0.96, 0.95), 1e-10, 0.0),
    "smear_backout": ((0.8, 0.95), 1e-10, 0.0),
}


def group_of(optimizer):
    return {name: group for group in optimizer.param_groups for name in group["param_names"]}


@pytest.mark.parametrize("under_transformer", [False, True])
def test_every_parameter_lands_in_its_group(under_transformer):
    model = Gen2ShapedStandIn(n_layer=4, extras_under_transformer=under_transformer)
    optimizer = build_gen2_optimizer(model)
    groups = group_of(optimizer)
    names = [name for name, _ in model.named_parameters()]
    assert sorted(groups) == sorted(names), "every parameter in exactly one group"
    prefix = "transformer." if under_transformer else ""
    for name, expected in EXPECTED_GROUP.items():
        full = name if name.startswith(("transformer.", "lm_head")) else prefix + name
        assert groups[full]["name"] == expected, full
        assert groups[full]["kind"] == "adamw"
        betas, eps, weight_decay = ADAMW_SETTINGS[expected]
        assert (tuple(groups[full]["betas"]), groups[full]["eps"], groups[full]["weight_decay"]) == (
            betas,
            eps,
            weight_decay,
        )
    params = dict(model.named_parameters())
    blocks = [name for name in names if name.startswith("transformer.h.")]
    assert len(blocks) == 4 * 6 + 2  # six matrices per layer and a ve_gate on layers 1 and 3
    for name in blocks:
        group = groups[name]
        assert group["kind"] == "muon" and group["name"] == "muon_{}x{}".format(*params[name].shape)
        assert (group["beta2"], group["ns_steps"], group["momentum_start"], group["momentum_peak"]) == (
            0.9,
            5,
            0.85,
            0.97,
        )
        assert (group["momentum_end"], group["momentum_warmup_steps"], group["initial_weight_decay"]) == (
            0.9,
            400,
            0.28,
        )
        assert group["weight_decay_schedule"] == "cosine"


def test_scaling_params_counted_from_the_model_equal_the_closed_form():
    # Published counts (block matrices + lm_head) for nanochat 2026's shapes, vocabulary 32,768.
    published = {
        12: 110_100_912,
        20: 435_160_240,
        21: 545_719_724,
        24: 729_810_624,
        26: 918_423_532,
        32: 1_677_724_672,
    }
    for depth, expected in published.items():
        width, heads = gen2_width(depth)
        with torch.device("meta"):
            model = Gen2ShapedStandIn(n_layer=depth, n_embd=width, n_head=heads, vocab_size=32768)
        assert count_gen2_scaling_params(model) == gen2_scaling_params(depth) == expected, depth


def test_effective_d24_learning_rates_of_the_speedrun():
    width, heads = gen2_width(24)
    with torch.device("meta"):
        model = Gen2ShapedStandIn(
            n_layer=24, n_embd=width, n_head=heads, vocab_size=32768, extras_under_transformer=True
        )
    training = build_gen2_training(model, {"target_param_data_ratio": 8})
    lrs = {group["name"]: group["lr"] for group in training.optimizer.param_groups}
    muon = {name: lr for name, lr in lrs.items() if name.startswith("muon_")}
    assert sorted(muon) == ["muon_12x12", "muon_1536x1536", "muon_1536x6144", "muon_6144x1536"]
    assert all(lr == pytest.approx(0.028284, abs=1e-6) for lr in muon.values())
    assert lrs["embedding"] == pytest.approx(0.3) and lrs["unembedding"] == pytest.approx(0.008)
    assert lrs["value_embeds"] == pytest.approx(0.15) and lrs["smear_backout"] == 0.2
    assert lrs["x0_lambdas"] == pytest.approx(0.70711, abs=1e-5) and lrs["resid_lambdas"] == pytest.approx(
        0.0070711, abs=1e-7
    )
    plan = training.plan
    assert (plan.total_batch_size, plan.num_iterations, plan.total_tokens) == (1_048_576, 5_568, 5_838_471_168)
    assert plan.scaling_params == 729_810_624 and plan.reference_scaling_params == 110_100_912
    muon_group = training.optimizer.param_groups[0]
    assert muon_group["initial_weight_decay"] == pytest.approx(0.05974, abs=1e-5)
    assert muon_group["num_iterations"] == 5_568
    assert training.trainer_arguments() == {"max_steps": 5_568, "max_grad_norm": 0.0}
    text = training.describe(flops_per_token=4_775_225_616)
    for expected in (
        "729,810,624",
        "1,048,576",
        "5,568",
        "5,838,471,168",
        "smear_backout",
        "value_embeds",
        "2.7880e+19",
    ):
        assert expected in text, expected


def test_a_generation_1_model_is_refused_by_the_generation_2_optimizer(tiny_config):
    model = NanoChatHFForCausalLM(tiny_config)
    # Refused by its parameters, or by config.generation where the config has that field.
    refusal = r"generation(-| is )1.*use nanochat_hf\.optim\.build_optimizer"
    with pytest.raises(UserInputError, match=refusal):
        build_gen2_optimizer(model)
    with pytest.raises(UserInputError, match=refusal):
        build_gen2_training(model)


def test_a_generation_2_model_is_refused_by_the_generation_1_optimizer():
    model = Gen2ShapedStandIn()
    with pytest.raises(
        UserInputError, match="generation-2 nanochat .*it has .*use nanochat_hf.optim.build_gen2_optimizer"
    ):
        build_optimizer(model, model_dim=64)


def test_the_config_generation_decides_when_present():
    model = Gen2ShapedStandIn()
    model.config = types.SimpleNamespace(generation=1, n_embd=64)
    with pytest.raises(UserInputError, match="model.config.generation is 1"):
        build_gen2_optimizer(model)
    model.config.generation = 2
    build_gen2_optimizer(model)
    with pytest.raises(UserInputError, match="model.config.generation is 2"):
        build_optimizer(model)


def test_an_unknown_parameter_is_an_error_naming_it():
    model = Gen2ShapedStandIn()
    model.transformer.h[0].attn.c_q.bias = nn.Parameter(torch.zeros(64))
    with pytest.raises(UserInputError, match=r"'transformer.h.0.attn.c_q.bias' \(shape \(64,\)\) has no group"):
        build_gen2_optimizer(model)
    model = Gen2ShapedStandIn()
    model.transformer.h[0].attn.c_q.weight = nn.Parameter(torch.zeros(64, 4, 16))
    with pytest.raises(UserInputError, match="Muon needs 2-D"):
        build_gen2_optimizer(model)


def test_a_missing_required_group_is_an_error():
    model = Gen2ShapedStandIn()
    del model.lm_head
    with pytest.raises(UserInputError, match="found no lm_head.weight"):
        build_gen2_optimizer(model)


def test_switched_off_features_leave_their_groups_out_and_frozen_parameters_are_skipped():
    model = Gen2ShapedStandIn()
    del model.value_embeds
    for block in model.transformer.h:
        if hasattr(block.attn, "ve_gate"):
            del block.attn.ve_gate
    model.x0_lambdas.requires_grad_(False)
    optimizer = build_gen2_optimizer(model)
    names = [group["name"] for group in optimizer.param_groups]
    assert "value_embeds" not in names and "x0_lambdas" not in names and "resid_lambdas" in names


def test_peft_wrapped_names_route_through_and_adapters_are_refused():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(Gen2ShapedStandIn(), LoraConfig(r=4, target_modules=["c_q"], modules_to_save=["lm_head"]))
    with pytest.raises(UserInputError, match="lora_A.default.weight' is a peft adapter tensor"):
        build_gen2_optimizer(model)
    # Adapters frozen, a full fine-tune of the rest: wrapped names are routed by their nanochat stems.
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" not in name and "original_module" not in name)
    optimizer = build_gen2_optimizer(model)
    groups = group_of(optimizer)
    assert groups["base_model.model.transformer.h.0.attn.c_q.base_layer.weight"]["name"] == "muon_64x64"
    assert groups["base_model.model.lm_head.modules_to_save.default.weight"]["name"] == "unembedding"
    assert "base_model.model.lm_head.original_module.weight" not in groups
    assert count_gen2_scaling_params(model) == count_gen2_scaling_params(Gen2ShapedStandIn())


def test_group_overrides_replace_settings_and_unknown_groups_are_errors():
    optimizer = build_gen2_optimizer(
        Gen2ShapedStandIn(), group_overrides={"embedding": {"betas": (0.9, 0.99)}, "muon": {"beta2": 0.95}}
    )
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert groups["embedding"]["betas"] == (0.9, 0.99) and groups["muon_64x64"]["beta2"] == 0.95
    with pytest.raises(UserInputError, match="unknown group"):
        build_gen2_optimizer(Gen2ShapedStandIn(), group_overrides={"embeddings": {}})


def test_build_gen2_training_for_chat_sft():
    model = Gen2ShapedStandIn()
    training = build_gen2_training(model, Gen2Settings.for_sft(num_iterations=10), total_batch_size=4096)
    groups = {group["name"]: group for group in training.optimizer.param_groups}
    s_d = (64 / 768) ** -0.5
    assert groups["muon_64x64"]["lr"] == pytest.approx(0.02 * 0.8)  # raw LRs (no batch scale) × 0.8
    assert groups["embedding"]["lr"] == pytest.approx(0.3 * s_d * 0.8)
    assert groups["smear_backout"]["lr"] == pytest.approx(0.2 * 0.8)
    muon = groups["muon_64x64"]
    assert (muon["initial_weight_decay"], muon["momentum_peak"], muon["momentum_warmup_steps"]) == (0.0, 0.95, 300)
    assert muon["momentum_warmdown_ratio"] == 0.0  # SFT's momentum only warms up
    scheduler = training.create_scheduler()
    multipliers = []
    for _ in range(10):
        multipliers.append(training.optimizer.param_groups[0]["lr"] / training.optimizer.param_groups[0]["initial_lr"])
        training.optimizer.step()
        scheduler.step()
    assert multipliers[:5] == [1.0] * 5 and multipliers[9] == pytest.approx(0.0)
    assert training.trainer_arguments()["max_steps"] == 10
