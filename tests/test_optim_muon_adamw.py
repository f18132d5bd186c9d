"""nanochat generation 1's Muon + AdamW optimizer."""

import copy
import io

import pytest
import torch
from torch import nn

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.errors import UserInputError
from nanochat_hf.optim import (
    NanoChatMuonAdamW,
    NanoChatMuonAdamWFactory,
    adamw_param_groups_for_fallback,
    build_optimizer,
    get_nanochat_schedule,
    muon_momentum,
)


def tiny_model(tiny_config, seed=0):
    torch.manual_seed(seed)
    model = NanoChatHFForCausalLM(tiny_config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    return model


def set_random_grads(model, seed):
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.grad = torch.randn(param.shape, generator=generator)


def muon_groups(optimizer):
    return [group for group in optimizer.param_groups if group["kind"] == "muon"]


def group_named(optimizer, name):
    (group,) = [group for group in optimizer.param_groups if group["name"] == name]
    return group


# Effective AdamW LRs of nanochat's reference runs (to 5 significant digits).
SPEC_ADAMW_LRS = {"d20": (0.154919, 0.0030984), "d26": (0.135873, 0.0027175), "d32": (0.122474, 0.0024495)}


@pytest.mark.parametrize("preset", ["d20", "d26", "d32"])
def test_param_groups_and_lrs_match_spec(preset):
    config = NanoChatHFConfig.from_preset(preset)
    with torch.device("meta"):
        model = NanoChatHFForCausalLM(config)
    optimizer = build_optimizer(model)

    names = {name: param for name, param in model.named_parameters()}
    seen = [name for group in optimizer.param_groups for name in group["param_names"]]
    assert sorted(seen) == sorted(names), "every parameter in exactly one group"

    # Group 0 is what the Trainer logs as `learning_rate`: the matrix LR.
    assert optimizer.param_groups[0]["kind"] == "muon"
    muon_names = [name for group in muon_groups(optimizer) for name in group["param_names"]]
    assert sorted(muon_names) == sorted(name for name in names if name.startswith("transformer.h."))
    assert len(muon_names) == 6 * config.n_layer
    for group in muon_groups(optimizer):
        assert group["lr"] == 0.02
        assert group["nesterov"] is True
        assert group["ns_coefficients"] == (3.4445, -4.7750, 2.0315)
        assert group["ns_steps"] == 5
        assert group["momentum"] == 0.85  # μ(0) of the warm-up
        assert (group["momentum_start"], group["momentum_end"], group["momentum_warmup_steps"]) == (0.85, 0.95, 300)
        assert "weight_decay" not in group  # Muon has none in G1; the update passes 0
        shapes = {tuple(names[name].shape) for name in group["param_names"]}
        assert len(shapes) == 1 and group["name"] == "muon_{}x{}".format(*shapes.pop())

    embedding_lr, unembedding_lr = SPEC_ADAMW_LRS[preset]
    embedding, unembedding = group_named(optimizer, "embedding"), group_named(optimizer, "unembedding")
    assert embedding["param_names"] == ["transformer.wte.weight"]
    assert unembedding["param_names"] == ["lm_head.weight"]
    assert embedding["lr"] == pytest.approx(embedding_lr, abs=1e-6)
    assert unembedding["lr"] == pytest.approx(unembedding_lr, abs=1e-7)
    for group in (embedding, unembedding):
        assert group["kind"] == "adamw"
        assert group["betas"] == (0.8, 0.95) and group["eps"] == 1e-10 and group["weight_decay"] == 0.0


def test_muon_update_equals_torch_muon(tiny_config):
    """Same math as torch.optim.Muon (nanochat's scaling, no weight decay, momentum μ(it) each step)."""
    ours = tiny_model(tiny_config)
    reference = copy.deepcopy(ours)
    optimizer = build_optimizer(ours, momentum_warmup_steps=4)
    matrices = [param for name, param in reference.named_parameters() if name.startswith("transformer.h.")]
    torch_muon = torch.optim.Muon(
        matrices, lr=0.02, weight_decay=0.0, momentum=0.85, nesterov=True, adjust_lr_fn="original"
    )
    for it in range(6):  # crosses the end of the (shortened) momentum warm-up
        set_random_grads(ours, seed=it)
        set_random_grads(reference, seed=it)
        torch_muon.param_groups[0]["momentum"] = muon_momentum(it, 0.85, 0.95, 4)
        optimizer.step()
        torch_muon.step()
        for group in muon_groups(optimizer):
            assert group["momentum"] == muon_momentum(it, 0.85, 0.95, 4)
    for (name, param), (_, expected) in zip(ours.named_parameters(), reference.named_parameters(), strict=True):
        if name.startswith("transformer.h."):
            assert torch.equal(param, expected), name


def reference_muon_step(param, grad, buf, lr, momentum):
    """nanochat's Muon step written out, with Newton–Schulz in float64 instead of bf16."""
    buf.mul_(momentum).add_((1 - momentum) * grad)
    update = (1 - momentum) * grad + momentum * buf
    a, b, c = 3.4445, -4.7750, 2.0315
    x = update.double()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.T
    rows, cols = param.shape
    return param.double() - lr * max(1, rows / cols) ** 0.5 * x


def test_muon_update_matches_spec_reference(tiny_config):
    model = tiny_model(tiny_config)
    optimizer = build_optimizer(model)
    matrices = {name: param for name, param in model.named_parameters() if name.startswith("transformer.h.")}
    buffers = {name: torch.zeros_like(param) for name, param in matrices.items()}
    for it in range(3):
        set_random_grads(model, seed=it)
        before = {name: param.detach().clone() for name, param in matrices.items()}
        expected = {
            name: reference_muon_step(before[name], param.grad, buffers[name], 0.02, muon_momentum(it))
            for name, param in matrices.items()
        }
        optimizer.step()
        for name, param in matrices.items():
            assert torch.allclose(optimizer.state[param]["momentum_buffer"], buffers[name], rtol=1e-6, atol=1e-7)
            step_taken = param.double() - before[name].double()
            step_expected = expected[name] - before[name].double()
            # bf16 Newton–Schulz vs float64: ~1.5% relative; a wrong scale (c_fc's 2×) or formula is ≥ 30%.
            relative_error = (step_taken - step_expected).norm() / step_expected.norm()
            assert relative_error < 0.05, (name, relative_error.item())


def test_newton_schulz_runs_in_bf16():
    # From p = 0 with lr 1 on a square matrix, the new parameter is exactly −(Newton–Schulz output).
    weight = nn.Parameter(torch.zeros(32, 32))
    optimizer = NanoChatMuonAdamW([{"kind": "muon", "name": "m", "params": [weight], "lr": 1.0}])
    weight.grad = torch.randn(32, 32, generator=torch.Generator().manual_seed(0))
    optimizer.step()
    assert weight.abs().sum() > 0
    assert torch.equal(weight.detach().bfloat16().float(), weight.detach()), "values representable in bf16"


def test_adamw_groups_equal_torch_adamw(tiny_config):
    ours = tiny_model(tiny_config)
    reference = copy.deepcopy(ours)
    optimizer = build_optimizer(ours)
    ref_params = dict(reference.named_parameters())
    torch_adamw = torch.optim.AdamW(
        [
            {"params": [ref_params[name] for name in group["param_names"]], "lr": group["lr"]}
            for group in optimizer.param_groups
            if group["kind"] == "adamw"
        ],
        betas=(0.8, 0.95),
        eps=1e-10,
        weight_decay=0.0,
    )
    for it in range(3):
        set_random_grads(ours, seed=it)
        set_random_grads(reference, seed=it)
        optimizer.step()
        torch_adamw.step()
    for name in ("transformer.wte.weight", "lm_head.weight"):
        param = dict(ours.named_parameters())[name]
        assert torch.equal(param, ref_params[name]), name
        ours_state, torch_state = optimizer.state[param], torch_adamw.state[ref_params[name]]
        assert set(ours_state) == set(torch_state) == {"step", "exp_avg", "exp_avg_sq"}
        for key in ours_state:
            assert torch.equal(ours_state[key], torch_state[key]), (name, key)


def run_steps(model, optimizer, scheduler, seeds):
    for seed in seeds:
        set_random_grads(model, seed)
        optimizer.step()
        scheduler.step()


def test_state_dict_round_trip_gives_identical_next_steps(tiny_config):
    """Save at step k inside the momentum warm-up; the resumed run continues bit-identically."""
    k, warmup = 3, 5
    uninterrupted = tiny_model(tiny_config)
    optimizer = build_optimizer(uninterrupted, momentum_warmup_steps=warmup)
    scheduler = get_nanochat_schedule(optimizer, num_training_steps=8)
    run_steps(uninterrupted, optimizer, scheduler, seeds=range(k))

    buffer = io.BytesIO()
    torch.save(
        {
            "model": uninterrupted.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        buffer,
    )
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    resumed = tiny_model(tiny_config, seed=123)  # different weights until the checkpoint is loaded
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = build_optimizer(resumed, momentum_warmup_steps=warmup)
    resumed_scheduler = get_nanochat_schedule(resumed_optimizer, num_training_steps=8)
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed_scheduler.load_state_dict(checkpoint["scheduler"])

    for group, expected in zip(resumed_optimizer.param_groups, optimizer.param_groups, strict=True):
        assert group["lr"] == expected["lr"]
        if group["kind"] == "muon":
            assert group["step"] == k

    run_steps(uninterrupted, optimizer, scheduler, seeds=range(k, 8))
    momenta = []
    for seed in range(k, 8):
        set_random_grads(resumed, seed)
        resumed_optimizer.step()
        momenta.append(muon_groups(resumed_optimizer)[0]["momentum"])
        resumed_scheduler.step()
    assert momenta == [muon_momentum(it, 0.85, 0.95, warmup) for it in range(k, 8)]
    for (name, param), expected in zip(resumed.named_parameters(), uninterrupted.parameters(), strict=True):
        assert torch.equal(param, expected), name


def test_parameters_without_gradient_are_left_alone(tiny_config):
    model = tiny_model(tiny_config)
    optimizer = build_optimizer(model)
    set_random_grads(model, seed=0)
    params = dict(model.named_parameters())
    frozen = ["transformer.h.0.attn.c_q.weight", "lm_head.weight"]
    for name in frozen:
        params[name].grad = None
    before = {name: param.detach().clone() for name, param in params.items()}
    optimizer.step()
    for name, param in params.items():
        if name in frozen:
            assert torch.equal(param, before[name]) and len(optimizer.state[param]) == 0, name
        else:
            assert not torch.equal(param, before[name]), name
    # The momentum schedule still advanced: it follows the global update index.
    assert all(group["step"] == 1 for group in muon_groups(optimizer))


def test_training_steps_reduce_the_loss(tiny_config):
    model = tiny_model(tiny_config)
    optimizer = build_optimizer(model)
    input_ids = torch.randint(0, tiny_config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(5):
        loss = model(input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


def test_unroutable_parameters_raise(tiny_config):
    model = tiny_model(tiny_config)
    model.extra_scale = nn.Parameter(torch.ones(3))
    with pytest.raises(UserInputError, match="extra_scale"):
        build_optimizer(model)

    model = tiny_model(tiny_config)
    model.transformer.h[0].attn.register_parameter("gain", nn.Parameter(torch.ones(4)))
    with pytest.raises(UserInputError, match=r"transformer\.h\.0\.attn\.gain.*2-D"):
        build_optimizer(model)

    model = tiny_model(tiny_config)
    model.lm_head = None
    with pytest.raises(UserInputError, match="lm_head.weight"):
        build_optimizer(model)


def test_frozen_parameters_are_not_optimized(tiny_config):
    model = tiny_model(tiny_config)
    model.transformer.wte.weight.requires_grad_(False)
    optimizer = build_optimizer(model)
    assert [group["name"] for group in optimizer.param_groups if group["kind"] == "adamw"] == ["unembedding"]


def test_muon_groups_reject_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        NanoChatMuonAdamW([{"kind": "muon", "params": [nn.Parameter(torch.ones(4))]}])
    with pytest.raises(ValueError, match="kind"):
        NanoChatMuonAdamW([{"params": [nn.Parameter(torch.ones(4, 4))]}])


def test_fallback_adamw_groups(tiny_config):
    model = tiny_model(tiny_config)
    groups = adamw_param_groups_for_fallback(model)
    assert [group["name"] for group in groups] == ["matrices", "embedding", "unembedding"]
    scale = (tiny_config.n_embd / 768) ** -0.5
    assert [group["lr"] for group in groups] == [0.02, 0.2 * scale, 0.004 * scale]
    assert sum(len(group["params"]) for group in groups) == len(list(model.parameters()))
    optimizer = torch.optim.AdamW(groups)
    assert all(group["betas"] == (0.8, 0.95) and group["eps"] == 1e-10 for group in optimizer.param_groups)
    set_random_grads(model, seed=0)
    optimizer.step()


def test_trainer_factory_builds_the_optimizer(tiny_config):
    from transformers.trainer_optimizer import is_optimizer_factory

    assert is_optimizer_factory(NanoChatMuonAdamWFactory)
    optimizer = NanoChatMuonAdamWFactory()(tiny_model(tiny_config), matrix_lr=0.01)
    assert isinstance(optimizer, NanoChatMuonAdamW)
    assert optimizer.param_groups[0]["lr"] == 0.01
