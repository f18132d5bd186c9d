"""Generation 2's Muon update, one rule at a time on small matrices, against the formulas written out here."""

import math

import pytest
import torch
from gen2_fixtures import POLAR_EXPRESS_COEFFICIENTS

from nanochat_hf.optim.muon_update_gen2 import (
    cautious_step_,
    equalize_rows,
    lr_shape_factor,
    muon_update_,
    nesterov_momentum_,
    normuon_rescale_,
    polar_express,
    second_moment_shape,
    snap_frobenius_norm,
)


SHAPES = [(24, 40), (40, 24), (32, 32)]  # wide, tall, square


def random_stack(shape, seed, k=3):
    return torch.randn(k, *shape, generator=torch.Generator().manual_seed(seed))


def polar_express_formula(x):
    """float64: X / (1.01·‖X‖_F + 1e-6), then X ← aX + (bA + cA²)X with A = XXᵀ, matrix by matrix."""
    out = []
    for matrix in x.double():
        tall = matrix.shape[0] > matrix.shape[1]
        m = matrix.T if tall else matrix  # the tall form is the same polynomial applied to Xᵀ
        m = m / (1.01 * torch.linalg.matrix_norm(m) + 1e-6)
        for a, b, c in POLAR_EXPRESS_COEFFICIENTS:
            gram = m @ m.T
            m = a * m + (b * gram + c * gram @ gram) @ m
        out.append(m.T if tall else m)
    return torch.stack(out)


@pytest.mark.parametrize("shape", SHAPES)
def test_polar_express_is_the_formula_and_orthogonalises(shape):
    x = random_stack(shape, seed=1)
    result = polar_express(x)
    assert result.shape == x.shape and result.dtype == torch.float32
    expected = polar_express_formula(x)
    assert torch.allclose(result.double(), expected, rtol=1e-4, atol=1e-5)
    # The point of it: the singular values land near 1 (Polar Express leaves them in a narrow band).
    singular = torch.linalg.svdvals(result.double())
    assert singular.min() > 0.6 and singular.max() < 1.25, (singular.min(), singular.max())
    input_singular = torch.linalg.svdvals(x.double())
    assert input_singular.max() / input_singular.min() > 3  # the input was far from orthogonal


def test_polar_express_uses_the_1_01_norm_factor_and_5_distinct_steps():
    x = random_stack((16, 16), seed=2, k=1)
    assert not torch.allclose(polar_express(x, steps=4), polar_express(x, steps=5))
    # A scaled input gives the same result: the first thing it does is divide by 1.01·‖X‖_F.
    assert torch.allclose(polar_express(x), polar_express(7.0 * x), rtol=1e-4, atol=1e-5)
    first = torch.stack([m / (1.01 * m.norm() + 1e-6) for m in x])
    a, b, c = POLAR_EXPRESS_COEFFICIENTS[0]
    gram = first @ first.mT
    assert torch.allclose(polar_express(x, steps=1), a * first + (b * gram + c * gram @ gram) @ first, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_muoneq_makes_every_row_norm_the_mean_row_norm(shape):
    x = random_stack(shape, seed=3) * torch.linspace(0.1, 5.0, shape[0]).view(1, -1, 1)  # very unequal rows
    result = equalize_rows(x)
    rows = shape[0]
    target = torch.linalg.matrix_norm(x) / math.sqrt(rows)
    row_norms = result.norm(dim=-1)
    assert torch.allclose(row_norms, target.view(-1, 1).expand_as(row_norms), rtol=1e-5)
    assert torch.allclose(torch.linalg.matrix_norm(result), torch.linalg.matrix_norm(x), rtol=1e-5)
    # Each row keeps its direction.
    assert torch.allclose(torch.nn.functional.cosine_similarity(result, x, dim=-1), torch.ones(3, rows), atol=1e-5)


def test_muoneq_leaves_a_zero_row_zero():
    x = random_stack((8, 12), seed=4, k=1)
    x[0, 3] = 0
    result = equalize_rows(x)
    assert torch.all(result[0, 3] == 0) and torch.isfinite(result).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_muon_plus_snaps_the_frobenius_norm_to_sqrt_min_dim(shape):
    x = random_stack(shape, seed=5) * torch.tensor([0.01, 1.0, 30.0]).view(3, 1, 1)
    result = snap_frobenius_norm(x)
    expected = math.sqrt(min(shape))
    assert torch.allclose(torch.linalg.matrix_norm(result), torch.full((3,), expected), rtol=1e-5)
    assert torch.allclose(
        result / torch.linalg.matrix_norm(result).view(3, 1, 1),
        x / torch.linalg.matrix_norm(x).view(3, 1, 1),
        atol=1e-6,
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_normuon_buffer_and_norm_preservation(shape):
    rows, cols = shape
    assert second_moment_shape(rows, cols) == ((rows, 1) if rows >= cols else (1, cols))
    reduce_dim = -1 if rows >= cols else -2
    buffer = torch.zeros(3, *second_moment_shape(rows, cols))
    beta2 = 0.9
    expected_buffer = torch.zeros_like(buffer)
    for seed in (6, 7):  # two updates: the buffer is an EMA without bias correction
        x = random_stack(shape, seed=seed)
        result = normuon_rescale_(x, buffer, beta2)
        expected_buffer = beta2 * expected_buffer + (1 - beta2) * (x * x).mean(dim=reduce_dim, keepdim=True)
        assert torch.allclose(buffer, expected_buffer, rtol=1e-6)
        normalised = x / expected_buffer.clamp_min(1e-10).sqrt()
        expected = (
            normalised * torch.linalg.matrix_norm(x).view(3, 1, 1) / torch.linalg.matrix_norm(normalised).view(3, 1, 1)
        )
        assert torch.allclose(result, expected, rtol=1e-5, atol=1e-6)
        assert torch.allclose(torch.linalg.matrix_norm(result), torch.linalg.matrix_norm(x), rtol=1e-5)
        # One scale per row (tall/square) or per column (wide): the ratio is constant along the other side.
        ratio = result / x
        assert torch.allclose(ratio, ratio.mean(dim=reduce_dim, keepdim=True).expand_as(ratio), rtol=1e-4)


def test_cautious_weight_decay_only_where_the_update_pulls_towards_zero():
    params = torch.tensor([[[1.0, -1.0, 2.0, -2.0, 0.0, 3.0]]])
    update = torch.tensor([[[0.5, -0.5, -0.5, 0.5, 0.5, 0.0]]])
    lr, weight_decay = 0.1, 0.5
    expected = params.clone()
    same_sign = (update * params) >= 0  # update and weight agree in sign (or either is 0): decay applies
    assert same_sign.tolist() == [[[True, True, False, False, True, True]]]
    expected = params - lr * update - lr * weight_decay * params * same_sign
    cautious_step_(params, update, lr, weight_decay)
    assert torch.allclose(params, expected)
    assert params[0, 0, 2] == 2.0 + 0.05 and params[0, 0, 0] == 1.0 - 0.05 - 0.05


def test_lr_factor_and_update_norm():
    assert lr_shape_factor(256, 64) == 2.0 and lr_shape_factor(64, 256) == 1.0 and lr_shape_factor(64, 64) == 1.0
    # After Muon+ and NorMuon the update has ‖U‖_F = √min(m, n), so with no weight decay one step moves a
    # matrix by lr·√max(1, m/n)·√min(m, n): 2× for a tall 4:1 matrix.
    for rows, cols in ((256, 64), (64, 256)):
        params = torch.zeros(1, rows, cols)
        grads = random_stack((rows, cols), seed=8, k=1)
        lr = 0.01
        muon_update_(
            params,
            grads,
            torch.zeros_like(params),
            torch.zeros(1, *second_moment_shape(rows, cols)),
            lr=lr * lr_shape_factor(rows, cols),
            momentum=0.9,
            weight_decay=0.0,
            beta2=0.9,
            ns_steps=5,
            ortho_dtype=torch.float32,
        )
        expected = lr * max(1, rows / cols) ** 0.5 * min(rows, cols) ** 0.5
        assert torch.linalg.matrix_norm(params[0]).item() == pytest.approx(expected, rel=1e-5)


def test_nesterov_momentum():
    grads, buffer = random_stack((4, 6), seed=9), random_stack((4, 6), seed=10)
    old_buffer, old_grads = buffer.clone(), grads.clone()
    update = nesterov_momentum_(grads, buffer, 0.9)
    assert torch.allclose(buffer, 0.9 * old_buffer + 0.1 * old_grads, atol=1e-6)
    assert torch.allclose(update, 0.1 * old_grads + 0.9 * buffer, atol=1e-6)
    assert torch.equal(grads, old_grads), "the gradients are not modified"


def test_bf16_orthogonalisation_stays_close_to_float32():
    shape = (40, 24)
    args = dict(lr=0.02, momentum=0.9, weight_decay=0.1, beta2=0.9, ns_steps=5)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        params = random_stack(shape, seed=11)
        muon_update_(
            params,
            random_stack(shape, seed=12),
            torch.zeros(3, *shape),
            torch.zeros(3, 40, 1),
            ortho_dtype=dtype,
            **args,
        )
        results[dtype] = params
        assert params.dtype == torch.float32
    before = random_stack(shape, seed=11)
    step32, step16 = results[torch.float32] - before, results[torch.bfloat16] - before
    relative = (step16 - step32).norm() / step32.norm()
    assert 0 < relative < 0.1, relative  # bf16 rounding of a 5-step polynomial: a few percent
