"""nanochat generation 2's Muon update for a stack of same-shaped matrices, one rule per function.

Every function takes tensors of shape (K, rows, cols) (K matrices of one shape, stacked) and works on the
last two dimensions. In the order `muon_update_` applies them:

1. **Nesterov momentum**: buf ← buf + (1−μ)(g − buf) (= μ·buf + (1−μ)·g); the update is g + μ(buf − g).
2. **MuonEq row equalisation** (arXiv 2603.28254): every row is rescaled to the mean row norm ‖X‖_F/√rows,
   which conditions the spectrum before orthogonalisation (and keeps ‖X‖_F).
3. **Polar Express** (arXiv 2505.16932) in place of Newton–Schulz: X ← X/(1.01·‖X‖_F + 1e-6), then 5
   odd-polynomial steps X ← aX + (bA + cA²)X with A = XXᵀ, each with its own (a, b, c) (computed for
   5 iterations, safety factor 2e-2, cushion 2). A tall matrix uses A = XᵀX and X(bA + cA²) instead, the
   same polynomial with the smaller Gram matrix. The 1.01 keeps the largest singular value inside the
   interval the coefficients were fitted to. Runs in bf16 where nanochat computes in bf16 (CUDA, SM ≥ 80).
4. **Muon+ norm snapping** (arXiv 2602.21545): ‖X‖_F ← √min(rows, cols), the norm of an exactly
   semi-orthogonal matrix, correcting for the iteration's under-convergence.
5. **NorMuon second moment** (arXiv 2510.05491): v̄ = mean of X² over the shorter side, i.e. one value
   per row when rows ≥ cols and one per column otherwise; u ← u + (1−β2)(v̄ − u) with β2 = 0.9, no bias correction;
   X ← X/√max(u, 1e-10), then rescaled so ‖X‖_F is what it was before this step.
6. **Cautious weight decay and the step**: lr_eff = lr·√max(1, rows/cols) (an MLP's 4d×d `c_fc` gets 2×);
   p ← p − lr_eff·X − lr_eff·λ·p⊙[X⊙p ≥ 0]: decay only where the update already pulls the weight to 0.

All the arithmetic is float32 except the Polar Express iteration when `ortho_dtype` is bf16. The
optimizer passes momentum, LR, weight decay and β2 as 0-D float32 tensors: scalar arithmetic such as
1 − μ then rounds as in nanochat, and under `torch.compile` a value that changes every update (the
schedules) is an input of the graph, not a constant that forces a recompilation. Python floats work too.
"""

import torch
from torch import Tensor


# (a, b, c) per iteration, for num_iters 5, safety factor 2e-2, cushion 2.
POLAR_EXPRESS_COEFFICIENTS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
POLAR_EXPRESS_NORM_FACTOR = 1.01
POLAR_EXPRESS_EPS = 1e-6
NORM_FLOOR = 1e-6  # MuonEq row norms and the Muon+ Frobenius norm
SECOND_MOMENT_FLOOR = 1e-10


def frobenius(x: Tensor) -> Tensor:
    """‖X‖_F of each matrix, shape (K, 1, 1), computed in float32."""
    return x.float().norm(dim=(-2, -1), keepdim=True)


def nesterov_momentum_(grads: Tensor, momentum_buffer: Tensor, momentum: Tensor | float) -> Tensor:
    """Updates `momentum_buffer` in place and returns the Nesterov update (the gradients are not modified)."""
    momentum_buffer.lerp_(grads, 1 - momentum)
    return grads.lerp(momentum_buffer, momentum)


def equalize_rows(x: Tensor) -> Tensor:
    """MuonEq: each row rescaled to the common norm ‖X‖_F/√rows (rows of norm < 1e-6 count as 1e-6)."""
    target = frobenius(x) / x.size(-2) ** 0.5
    row_norms = x.float().norm(dim=-1, keepdim=True).clamp_min(NORM_FLOOR)
    return x * (target / row_norms).to(x.dtype)


def polar_express(x: Tensor, steps: int = len(POLAR_EXPRESS_COEFFICIENTS)) -> Tensor:
    """Polar Express orthogonalisation (in x's dtype): ≈ U·Vᵀ of X = U·S·Vᵀ."""
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * POLAR_EXPRESS_NORM_FACTOR + POLAR_EXPRESS_EPS)
    tall = x.size(-2) > x.size(-1)
    for a, b, c in POLAR_EXPRESS_COEFFICIENTS[:steps]:
        if tall:
            gram = x.mT @ x
            x = a * x + x @ (b * gram + c * (gram @ gram))
        else:
            gram = x @ x.mT
            x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x


def snap_frobenius_norm(x: Tensor) -> Tensor:
    """Muon+: rescale each matrix to ‖X‖_F = √min(rows, cols)."""
    target = min(x.size(-2), x.size(-1)) ** 0.5
    return x * (target / frobenius(x).clamp_min(NORM_FLOOR)).to(x.dtype)


def second_moment_shape(rows: int, cols: int) -> tuple[int, int]:
    """NorMuon's factored second moment: one value per row if rows ≥ cols, else one per column."""
    return (rows, 1) if rows >= cols else (1, cols)


def normuon_rescale_(x: Tensor, second_moment: Tensor, beta2: Tensor | float) -> Tensor:
    """NorMuon: update `second_moment` (K, rows, 1) or (K, 1, cols) in place; return x normalised by it.

    The Frobenius norm is preserved: both norms come from the same per-row (or per-column) mean squares.
    """
    reduce_dim = -1 if x.size(-2) >= x.size(-1) else -2
    reduced = x.size(reduce_dim)
    mean_square = x.float().square().mean(dim=reduce_dim, keepdim=True)
    second_moment.lerp_(mean_square.to(second_moment.dtype), 1 - beta2)
    scale = second_moment.clamp_min(SECOND_MOMENT_FLOOR).rsqrt()
    norm_before = (mean_square.sum(dim=(-2, -1), keepdim=True) * reduced).sqrt()
    norm_after = (mean_square * reduced * scale.float().square()).sum(dim=(-2, -1), keepdim=True).sqrt()
    return x * (scale * (norm_before / norm_after.clamp_min(SECOND_MOMENT_FLOOR))).to(x.dtype)


def lr_shape_factor(rows: int, cols: int) -> float:
    """√max(1, rows/cols): tall matrices take larger steps."""
    return max(1.0, rows / cols) ** 0.5


def cautious_step_(params: Tensor, update: Tensor, lr: Tensor | float, weight_decay: Tensor | float) -> None:
    """p ← p − lr·u − lr·λ·p where u and p have the same sign (or either is 0), p unchanged by λ elsewhere."""
    mask = (update * params) >= 0
    params.sub_(lr * update + lr * weight_decay * params * mask)


def muon_update_(
    params: Tensor,
    grads: Tensor,
    momentum_buffer: Tensor,
    second_moment: Tensor,
    *,
    lr: Tensor | float,
    momentum: Tensor | float,
    weight_decay: Tensor | float,
    beta2: Tensor | float,
    ns_steps: int,
    ortho_dtype: torch.dtype,
) -> None:
    """One generation-2 Muon update of K stacked float32 matrices (params and both buffers in place).

    `lr` is the effective one, the group's LR × `lr_shape_factor(rows, cols)`.
    """
    update = nesterov_momentum_(grads, momentum_buffer, momentum)
    x = equalize_rows(update.to(ortho_dtype))
    x = polar_express(x, ns_steps)
    update = snap_frobenius_norm(x.to(params.dtype))
    update = normuon_rescale_(update, second_moment, beta2)
    cautious_step_(params, update, lr, weight_decay)
