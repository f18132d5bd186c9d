"""`NanoChatGen2MuonAdamW`: 3 updates against nanochat 2026's rules written out here, resume, dtypes, checks."""

import copy
import io
import math

import pytest
import torch
from gen2_fixtures import POLAR_EXPRESS_COEFFICIENTS, Gen2ShapedStandIn, randomize, set_random_grads

from nanochat_hf.errors import UserInputError
from nanochat_hf.optim import NanoChatGen2MuonAdamW, build_gen2_optimizer, get_gen2_schedule


pytestmark = pytest.mark.usefixtures("one_cpu_thread")

# AdamW groups: name stem → (lr factor on top of the settings, betas, weight decay).
ADAMW = {
    "lm_head.weight": ((0.8, 0.96), 0.01),
    "wte.weight": ((0.8, 0.995), 0.001),
    "value_embeds": ((0.8, 0.995), 0.01),
    "resid_lambdas": ((0.8, 0.95), 0.05),
    "x0_lambdas": ((0.96, 0.95), 0.0),
    "smear": ((0.8, 0.95), 0.0),
}


def adamw_settings(name, width, bls):
    s_d = (width / 768) ** -0.5
    lrs = {
        "lm_head.weight": 0.008 * bls * s_d,
        "wte.weight": 0.3 * bls * s_d,
        "value_embeds": 0.5 * 0.3 * bls * s_d,
        "resid_lambdas": 0.01 * 0.5 * bls,
        "x0_lambdas": 0.5 * bls,
        "smear": 0.2,
    }
    for stem in ADAMW:
        if stem in name or (stem == "smear" and ("smear" in name or "backout" in name)):
            return lrs[stem], *ADAMW[stem]
    return None


def reference_muon(p, g, buf, v, *, lr, mu, wd, beta2=0.9):
    """nanochat 2026's Muon update of one matrix, from the formulas (float32)."""
    rows, cols = p.shape
    buf.mul_(mu).add_((1 - mu) * g)
    u = (1 - mu) * g + mu * buf
    u = u * (torch.linalg.matrix_norm(u) / math.sqrt(rows)) / u.norm(dim=1, keepdim=True).clamp_min(1e-6)
    x = u / (1.01 * torch.linalg.matrix_norm(u) + 1e-6)
    for a, b, c in POLAR_EXPRESS_COEFFICIENTS:
        if rows > cols:
            gram = x.T @ x
            x = a * x + x @ (b * gram + c * gram @ gram)
        else:
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
    x = x * math.sqrt(min(rows, cols)) / torch.linalg.matrix_norm(x).clamp_min(1e-6)
    dim = 1 if rows >= cols else 0
    v.mul_(beta2).add_((1 - beta2) * (x * x).mean(dim=dim, keepdim=True))
    y = x / v.clamp_min(1e-10).sqrt()
    y = y * torch.linalg.matrix_norm(x) / torch.linalg.matrix_norm(y)
    lr_eff = lr * math.sqrt(max(1.0, rows / cols))
    decay = (y * p) >= 0
    # Where the update is ~0 its sign (and so the cautious mask) is rounding: another CPU's matmul kernels
    # may decide the other way. The second result bounds what such an entry may differ by.
    undecided = y.abs() < 1e-4 * y.abs().max()
    return p - lr_eff * y - lr_eff * wd * p * decay, lr_eff * wd * p.abs() * undecided


def reference_adamw(p, g, m, v, t, *, lr, betas, wd, eps=1e-10):
    beta1, beta2 = betas
    p = p * (1 - lr * wd)
    m.mul_(beta1).add_((1 - beta1) * g)
    v.mul_(beta2).add_((1 - beta2) * g * g)
    return p - (lr / (1 - beta1**t)) * m / ((v / (1 - beta2**t)).sqrt() + eps)


def test_three_updates_equal_the_rules_written_out():
    """Muon + AdamW + the LR, momentum and weight-decay schedules over 3 updates (warm-down included)."""
    width, bls, wd, steps = 64, 2**0.5, 0.2, 3
    model = randomize(Gen2ShapedStandIn(n_layer=3, n_embd=width, n_head=2, n_kv_head=1, extras_under_transformer=True))
    optimizer = build_gen2_optimizer(
        model,
        batch_lr_scale=bls,
        weight_decay=wd,
        num_iterations=steps,
        momentum_warmup_steps=1,
        ortho_dtype="float32",
    )
    scheduler = get_gen2_schedule(optimizer, steps, warmup_steps=1)
    names = dict(model.named_parameters())
    start = {name: p.detach().clone() for name, p in names.items()}
    expected = dict(start)
    buffers = {name: (torch.zeros_like(p), None) for name, p in names.items()}
    slack = {name: torch.zeros_like(p) for name, p in names.items()}
    # Schedules from the formulas: N = 3, warm-down round(0.65·3) = 2 updates starting at update 1.
    lr_multipliers = [1.0, 1.0, 0.5 + 0.5 * 0.05]
    momenta = [0.85, 0.97, 0.97 * 0.5 + 0.90 * 0.5]
    decays = [wd * 0.5 * (1 + math.cos(math.pi * it / steps)) for it in range(steps)]
    for it in range(steps):
        set_random_grads(model, seed=it)
        for name, param in names.items():
            grad, adam = param.grad, adamw_settings(name, width, bls)
            if adam is None:  # a block matrix: Muon
                buf, v = buffers[name]
                if v is None:
                    rows, cols = param.shape
                    v = torch.zeros(rows, 1) if rows >= cols else torch.zeros(1, cols)
                    buffers[name] = (buf, v)
                expected[name], undecided = reference_muon(
                    expected[name], grad, buf, v, lr=0.02 * bls * lr_multipliers[it], mu=momenta[it], wd=decays[it]
                )
                slack[name] += undecided
            else:
                lr, betas, group_wd = adam
                m, v = buffers[name]
                if v is None:
                    v = torch.zeros_like(param)
                    buffers[name] = (m, v)
                expected[name] = reference_adamw(
                    expected[name], grad, m, v, it + 1, lr=lr * lr_multipliers[it], betas=betas, wd=group_wd
                )
        optimizer.step()
        scheduler.step()
        for group in optimizer.param_groups:
            if group["kind"] == "muon":
                assert group["momentum"] == pytest.approx(momenta[it]) and group["weight_decay"] == pytest.approx(
                    decays[it]
                )
    for name, param in names.items():
        assert (expected[name] - start[name]).abs().max() > 1e-4, name  # every tensor really moved
        assert (slack[name] > 0).float().mean() < 0.01, name  # the slack covers few entries
        tolerance = 2e-6 + 1e-5 * expected[name].abs() + slack[name]
        assert ((param - expected[name]).abs() <= tolerance).all(), (name, (param - expected[name]).abs().max())


def test_adamw_math_is_float32_for_bf16_parameters_with_bf16_state():
    model = randomize(Gen2ShapedStandIn())
    model.transformer.wte.to(torch.bfloat16)
    optimizer = build_gen2_optimizer(model)
    wte = model.transformer.wte.weight
    start = wte.detach().float().clone()
    lr = 0.3 * (64 / 768) ** -0.5
    m, v = torch.zeros_like(start), torch.zeros_like(start)
    for it in range(3):
        set_random_grads(model, seed=it)
        # One update from the stored bf16 state, in float32, rounded once to bf16 when stored.
        expected = reference_adamw(
            wte.detach().float(), wte.grad.float(), m, v, it + 1, lr=lr, betas=(0.8, 0.995), wd=0.001
        )
        optimizer.step()
        state = optimizer.state[wte]
        assert wte.dtype == state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.bfloat16
        for ours, reference in ((wte, expected), (state["exp_avg"], m), (state["exp_avg_sq"], v)):
            # Within one bf16 unit of the float32 result (torch.optim.AdamW on the bf16 tensors misses it).
            assert torch.allclose(ours.float(), reference, rtol=2**-7, atol=1e-6), it
        m, v = state["exp_avg"].float(), state["exp_avg_sq"].float()
    assert (wte.float() - start).abs().max() > 0.1


def test_stacked_and_matrix_by_matrix_updates_agree():
    a = randomize(Gen2ShapedStandIn(n_layer=3))
    b = copy.deepcopy(a)
    stacked = build_gen2_optimizer(a, ortho_dtype="float32")
    looped = build_gen2_optimizer(b, ortho_dtype="float32", stack_matrices=False)
    for it in range(3):
        set_random_grads(a, it)
        set_random_grads(b, it)
        stacked.step()
        looped.step()
    for (name, x), y in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6), name


def train(model, optimizer, scheduler, seeds):
    for seed in seeds:
        set_random_grads(model, seed)
        optimizer.step()
        scheduler.step()


def test_state_dict_round_trip_resumes_bit_identically():
    """3 updates, save, load into a fresh optimizer, 3 more == 6 straight (inside every schedule's ramp)."""
    settings = dict(weight_decay=0.3, num_iterations=6, momentum_warmup_steps=4, batch_lr_scale=2.0)
    straight = randomize(Gen2ShapedStandIn(n_layer=3))
    straight.transformer.wte.to(torch.bfloat16)  # bf16 state goes through the round trip too
    optimizer = build_gen2_optimizer(straight, **settings)
    scheduler = get_gen2_schedule(optimizer, 6, warmup_steps=2)
    train(straight, optimizer, scheduler, range(3))

    buffer = io.BytesIO()
    torch.save(
        {"model": straight.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        buffer,
    )
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    resumed = randomize(Gen2ShapedStandIn(n_layer=3), seed=99)
    resumed.transformer.wte.to(torch.bfloat16)
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = build_gen2_optimizer(resumed, **settings)
    resumed_scheduler = get_gen2_schedule(resumed_optimizer, 6, warmup_steps=2)
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed_scheduler.load_state_dict(checkpoint["scheduler"])
    assert all(group["step"] == 3 for group in resumed_optimizer.param_groups if group["kind"] == "muon")

    train(straight, optimizer, scheduler, range(3, 6))
    train(resumed, resumed_optimizer, resumed_scheduler, range(3, 6))
    for (name, param), expected in zip(resumed.named_parameters(), straight.parameters(), strict=True):
        assert torch.equal(param, expected), name
    for group, expected in zip(resumed_optimizer.param_groups, optimizer.param_groups, strict=True):
        assert {k: v for k, v in group.items() if k != "params"} == {
            k: v for k, v in expected.items() if k != "params"
        }


def test_load_moments_keeps_this_optimizers_settings():
    """nanochat's SFT warm start: momenta from the base run, LRs / schedules / step counter from the new one."""
    base = randomize(Gen2ShapedStandIn())
    base_optimizer = build_gen2_optimizer(base, weight_decay=0.28, num_iterations=10)
    for it in range(2):
        set_random_grads(base, it)
        base_optimizer.step()
    sft_optimizer = build_gen2_optimizer(
        base, weight_decay=0.0, matrix_lr=0.01, momentum_peak=0.95, momentum_warmup_steps=300
    )
    fresh_groups = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in sft_optimizer.param_groups])
    sft_optimizer.load_moments(base_optimizer.state_dict())
    assert [{k: v for k, v in g.items() if k != "params"} for g in sft_optimizer.param_groups] == fresh_groups
    for param in base.parameters():
        for key, value in base_optimizer.state[param].items():
            assert torch.equal(sft_optimizer.state[param][key], value)


def test_parameters_without_gradients_are_left_alone_but_the_schedule_advances():
    model = randomize(Gen2ShapedStandIn())
    optimizer = build_gen2_optimizer(model)
    set_random_grads(model, 0)
    frozen = [model.transformer.h[0].attn.c_q.weight, model.lm_head.weight]
    for param in frozen:
        param.grad = None
    before = [param.detach().clone() for param in frozen]
    optimizer.step()
    for param, old in zip(frozen, before, strict=True):
        assert torch.equal(param, old) and param not in optimizer.state
    assert all(group["step"] == 1 for group in optimizer.param_groups if group["kind"] == "muon")


def test_group_names_kinds_and_the_first_group_is_muon():
    optimizer = build_gen2_optimizer(Gen2ShapedStandIn())
    assert optimizer.param_groups[0]["kind"] == "muon"  # the Trainer logs group 0's LR
    kinds = [group["kind"] for group in optimizer.param_groups]
    assert kinds == sorted(kinds, key=lambda kind: kind != "muon")
    names = [group["name"] for group in optimizer.param_groups]
    assert names[-6:] == ["unembedding", "embedding", "value_embeds", "resid_lambdas", "x0_lambdas", "smear_backout"]
    assert all(name.startswith("muon_") for name in names[:-6]) and len(set(names)) == len(names)


@pytest.mark.parametrize(
    "group, message",
    [
        ({"kind": "adamw", "lr": float("nan")}, "lr must be a finite number"),
        ({"kind": "adamw", "lr": -0.1}, "lr must be in"),
        ({"kind": "adamw", "betas": (0.8, 1.0)}, "betas must be in"),
        ({"kind": "adamw", "eps": float("inf")}, "eps must be a finite number"),
        ({"kind": "adamw", "weight_decay": -1.0}, "weight_decay must be in"),
        ({"kind": "muon", "lr": float("inf")}, "lr must be a finite number"),
        ({"kind": "muon", "weight_decay": float("nan")}, "initial_weight_decay must be a finite number"),
        ({"kind": "muon", "momentum_peak": 1.5}, "momentum_peak must be in"),
        ({"kind": "muon", "beta2": -0.1}, "beta2 must be in"),
        ({"kind": "muon", "ns_steps": 6}, "ns_steps must be in"),
        ({"kind": "muon", "num_iterations": 0}, "num_iterations must be in"),
        ({"kind": "muon", "ortho_dtype": "float16"}, "ortho_dtype must be"),
        ({"kind": "sgd"}, "kind 'muon' or 'adamw'"),
    ],
)
def test_bad_hyper_parameters_are_clear_errors(group, message):
    weight = torch.nn.Parameter(torch.zeros(4, 4))
    with pytest.raises(UserInputError, match=message):
        NanoChatGen2MuonAdamW([{"name": "g", "params": [weight], **group}])


def test_a_muon_group_must_hold_matrices_of_one_shape():
    with pytest.raises(UserInputError, match="2-D matrices of one shape"):
        NanoChatGen2MuonAdamW(
            [
                {
                    "kind": "muon",
                    "params": [torch.nn.Parameter(torch.zeros(4, 4)), torch.nn.Parameter(torch.zeros(4, 8))],
                }
            ]
        )
    with pytest.raises(UserInputError, match="2-D matrices of one shape"):
        NanoChatGen2MuonAdamW([{"kind": "muon", "params": [torch.nn.Parameter(torch.zeros(4))]}])


def test_compiled_update_captures_one_graph_and_does_not_recompile_on_new_schedule_values():
    """`compile=True` must trace the whole update (fullgraph) once per shape, whatever the momentum/LR/wd."""
    from torch._dynamo.utils import counters

    import nanochat_hf.optim.muon_adamw_gen2 as module

    torch._dynamo.reset()
    counters.clear()
    original = torch.compile
    try:
        # The eager-Python backend checks graph capture without a C++ toolchain.
        module.torch.compile = lambda fn, **kwargs: original(fn, backend="eager", **kwargs)
        weight = torch.nn.Parameter(torch.randn(16, 8))
        optimizer = NanoChatGen2MuonAdamW(
            [{"kind": "muon", "params": [weight], "num_iterations": 4, "weight_decay": 0.1}], compile=True
        )
        reference = torch.nn.Parameter(weight.detach().clone())
        eager = NanoChatGen2MuonAdamW(
            [{"kind": "muon", "params": [reference], "num_iterations": 4, "weight_decay": 0.1}]
        )
        for it in range(4):
            weight.grad = torch.randn(16, 8, generator=torch.Generator().manual_seed(it))
            reference.grad = weight.grad.clone()
            optimizer.step()
            eager.step()
    finally:
        module.torch.compile = original
    assert counters["stats"]["unique_graphs"] == 1
    assert torch.allclose(weight, reference, atol=1e-6)
