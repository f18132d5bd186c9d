"""nanochat generation 2's scaling rules: how depth decides the horizon, the batch, the LRs and the weight decay.

Pure arithmetic (no torch), so planners and dry runs can use it without building a model. The rules are
those of nanochat's 2026 `scripts/base_train.py`, tuned at a reference model d12 and carried to other
depths:

- **Scaling parameters** N = the transformer's matrices (every weight in the blocks, the value-embedding
  gates included) + `lm_head`. Embeddings, value embeddings and scalars are not counted: this choice gave
  nanochat the cleanest scaling laws.
- **Horizon** D = int(ratio · N) tokens (ratio 12 by default, 8 for the GPT-2 speedrun), and the
  reference horizon D_ref = ratio · N(d12), d12 built with the same aspect ratio, head size and vocabulary.
- **Automatic total batch** (Power Lines, arXiv 2505.13738: B_opt ∝ D^0.383), rounded to a power of two:
  B = 2^round(log2(B_ref · (D/D_ref)^0.383)) with B_ref = 2^19 tokens. The ratio cancels in D/D_ref, so B
  depends on the depth only.
- **Batch LR scale** bls = √(B/B_ref), applied to the embedding, unembedding, scalar and matrix LRs (the
  smear/backout group keeps its fixed LR).
- **Muon weight decay** λ = 0.28 · √(B/B_ref) · (D_ref/D): keeping T_epoch = B/(η·λ·D) constant
  (arXiv 2405.13698) with η ∝ √B.
- **Updates** = D // B (or an explicit count, or round(FLOPs / (FLOPs per token · B))).

AdamW LRs are also multiplied by s_d = (d_model/768)^-0.5 (they were tuned at width 768), exactly as in
generation 1.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from ..errors import UserInputError
from ..planning.flops import ModelShape, param_counts
from ..planning.horizon import (
    GEN2_BATCH_SIZE_EXPONENT,
    GEN2_RATIO,
    GEN2_REFERENCE_BATCH_SIZE,
    GEN2_REFERENCE_DEPTH,
    GPT2_SPEEDRUN_RATIO,
    auto_total_batch_size,
)
from .checks import check_number


# B_ref (the best total batch measured at d12), the Power Lines exponent, the reference depth and the ratios
# are the planner's (`planning/horizon.py`), which derives the same horizon without torch.
REFERENCE_BATCH_SIZE = GEN2_REFERENCE_BATCH_SIZE
REFERENCE_DEPTH = GEN2_REFERENCE_DEPTH
BATCH_SIZE_EXPONENT = GEN2_BATCH_SIZE_EXPONENT
LR_REFERENCE_DIM = 768  # the width nanochat's AdamW LRs were tuned at
DEFAULT_RATIO = GEN2_RATIO  # tokens per scaling parameter, nanochat 2026's default
SPEEDRUN_RATIO = GPT2_SPEEDRUN_RATIO  # the GPT-2 speedrun (d24)

# nanochat generation 2's shape rule and vocabulary.
ASPECT_RATIO = 64
HEAD_DIM = 128
VOCAB_SIZE = 32768
PAD_VOCAB_TO = 64
VE_GATE_CHANNELS = 12


def gen2_width(depth: int, aspect_ratio: int = ASPECT_RATIO, head_dim: int = HEAD_DIM) -> tuple[int, int]:
    """(model width, heads) of a depth: depth·aspect_ratio rounded up to a multiple of the head size."""
    if depth < 1 or aspect_ratio < 1 or head_dim < 1:
        raise UserInputError(
            f"depth, aspect_ratio and head_dim must be positive, got {depth}, {aspect_ratio}, {head_dim}"
        )
    width = -(-depth * aspect_ratio // head_dim) * head_dim
    return width, width // head_dim


def gen2_scaling_params(
    depth: int,
    *,
    aspect_ratio: int = ASPECT_RATIO,
    head_dim: int = HEAD_DIM,
    vocab_size: int = VOCAB_SIZE,
    pad_vocab_to: int = PAD_VOCAB_TO,
    n_kv_head: int | None = None,
    ve_gate_channels: int = VE_GATE_CHANNELS,
) -> int:
    """Scaling parameters of a generation-2 depth: the block matrices (value gates included) + `lm_head`.

    Counted by `planning.flops` (the one place that counts nanochat's parameters) from the shape:
    d12 -> 110,100,912; d24 -> 729,810,624; d32 -> 1,677,724,672. `lm_head` has the padded vocabulary's rows.
    """
    width, heads = gen2_width(depth, aspect_ratio, head_dim)
    shape = ModelShape(
        n_layer=depth,
        n_embd=width,
        n_head=heads,
        n_kv_head=heads if n_kv_head is None else n_kv_head,
        head_dim=head_dim,
        vocab_size=vocab_size,
        value_embeddings=True,
        layer_lambdas=True,
        smear=True,
        backout=True,
        window_pattern="SSSL",
        pad_vocab_size_to=pad_vocab_to,
        ve_gate_channels=ve_gate_channels,
    )
    return param_counts(shape).scaling


def batch_lr_scale(total_batch_size: int) -> float:
    """√(B/B_ref): exactly 1.0 at the reference batch."""
    ratio = total_batch_size / REFERENCE_BATCH_SIZE
    return 1.0 if ratio == 1.0 else ratio**0.5


def scaled_weight_decay(
    weight_decay: float, total_batch_size: int, reference_tokens: float, target_tokens: int
) -> float:
    """λ · √(B/B_ref) · (D_ref/D): the Muon weight decay that keeps T_epoch constant."""
    return weight_decay * math.sqrt(total_batch_size / REFERENCE_BATCH_SIZE) * (reference_tokens / target_tokens)


def adamw_lr_scale(model_dim: int) -> float:
    """s_d = (d_model/768)^-0.5."""
    return (model_dim / LR_REFERENCE_DIM) ** -0.5


def gen2_group_lrs(
    model_dim: int,
    *,
    batch_lr_scale: float = 1.0,
    matrix_lr: float = 0.02,
    embedding_lr: float = 0.3,
    unembedding_lr: float = 0.008,
    scalar_lr: float = 0.5,
    smear_lr: float = 0.2,
) -> dict[str, float]:
    """Each param group's LR before the schedule, computed in nanochat's order of operations.

    Keys are the group names of `NanoChatGen2MuonAdamW` ("muon" stands for every `muon_RxC` group).
    """
    s_d = adamw_lr_scale(model_dim)
    embedding = embedding_lr * batch_lr_scale
    scalar = scalar_lr * batch_lr_scale
    return {
        "muon": matrix_lr * batch_lr_scale,
        "unembedding": unembedding_lr * batch_lr_scale * s_d,
        "embedding": embedding * s_d,
        "value_embeds": embedding * s_d * 0.5,
        "resid_lambdas": scalar * 0.01,
        "x0_lambdas": scalar,
        "smear_backout": smear_lr,  # fixed: no batch or width scaling
    }


@dataclass
class Gen2Settings:
    """Config-like settings of a generation-2 run (a recipe's YAML maps onto these fields one to one).

    Horizon precedence, as nanochat's: `num_iterations` > `target_flops` > `target_param_data_ratio`;
    `-1` disables the first two. `total_batch_size` -1 = automatic. LRs are the un-scaled ones (the batch
    and width scales are applied by the plan). `sft=True` gives nanochat's chat-SFT optimizer instead (see
    `Gen2Settings.for_sft`).
    """

    target_param_data_ratio: float = DEFAULT_RATIO
    total_batch_size: int = -1
    num_iterations: int = -1
    target_flops: float = -1.0
    matrix_lr: float = 0.02
    embedding_lr: float = 0.3
    unembedding_lr: float = 0.008
    scalar_lr: float = 0.5
    smear_lr: float = 0.2
    weight_decay: float = 0.28  # Muon only, before scaling
    warmup_steps: int = 40
    warmdown_ratio: float = 0.65
    final_lr_frac: float = 0.05
    momentum_start: float = 0.85
    momentum_peak: float = 0.97
    momentum_warmup_steps: int = 400
    momentum_end: float = 0.90
    # Shape rule of the d12 reference (nanochat builds it with the run's own aspect ratio and head size).
    aspect_ratio: int = ASPECT_RATIO
    head_dim: int = HEAD_DIM
    reference_depth: int = REFERENCE_DEPTH
    # Chat SFT (nanochat 2026's chat_sft.py): raw LRs × init_lr_frac, no batch scaling, no Muon weight
    # decay, momentum 0.85 → 0.95 over 300 updates, LR 1.0 until half-way then linear to final_lr_frac.
    sft: bool = False
    init_lr_frac: float = 1.0
    warmup_ratio: float = 0.0
    group_overrides: dict = field(default_factory=dict)  # {"embedding": {"betas": (0.8, 0.99)}, ...}

    @classmethod
    def from_mapping(cls, values: Mapping, where: str = "optimizer settings") -> "Gen2Settings":
        """From a YAML-style mapping; an unknown key is an error naming it and `where`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserInputError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**dict(values))

    @classmethod
    def for_sft(cls, **overrides) -> "Gen2Settings":
        """nanochat 2026's chat SFT: embedding 0.3, unembedding 0.004, matrix 0.02 (inherited raw from
        pretraining when it has them), scalar 0.5, all × 0.8; warm-down over the second half to 0.

        Muon weight decay 0: nanochat asks for 0, then its warm start from the base optimizer restores the
        base run's last scheduled value (a cosine's tail, ≈0); `load_moments` keeps the 0."""
        values = dict(
            sft=True,
            unembedding_lr=0.004,
            init_lr_frac=0.8,
            weight_decay=0.0,
            warmup_ratio=0.0,
            warmdown_ratio=0.5,
            final_lr_frac=0.0,
            momentum_start=0.85,
            momentum_peak=0.95,
            momentum_warmup_steps=300,
            momentum_end=0.95,
        )
        values.update(overrides)
        return cls(**values)

    def base_lrs(self) -> dict[str, float]:
        """The five un-scaled LRs, as keyword arguments of `gen2_group_lrs` / `gen2_param_groups`."""
        return {
            key: getattr(self, key) for key in ("matrix_lr", "embedding_lr", "unembedding_lr", "scalar_lr", "smear_lr")
        }

    def validate(self) -> None:
        for key in (
            "matrix_lr",
            "embedding_lr",
            "unembedding_lr",
            "scalar_lr",
            "smear_lr",
            "weight_decay",
            "init_lr_frac",
        ):
            check_number(key, getattr(self, key), low=0.0)
        for key in ("warmdown_ratio", "final_lr_frac", "warmup_ratio"):
            check_number(key, getattr(self, key), low=0.0, high=1.0)
        for key in ("momentum_start", "momentum_peak", "momentum_end"):
            check_number(key, getattr(self, key), low=0.0, high=1.0, high_open=True)
        for key in ("warmup_steps", "momentum_warmup_steps"):
            check_number(key, getattr(self, key), low=0, whole=True)
        for key in ("aspect_ratio", "head_dim", "reference_depth"):
            check_number(key, getattr(self, key), low=1, whole=True)
        for key in ("target_param_data_ratio", "target_flops"):  # -1 disables
            if getattr(self, key) != -1:
                check_number(key, getattr(self, key), low=0.0)
        for key in ("total_batch_size", "num_iterations"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not (value == -1 or value > 0):
                raise UserInputError(f"{key} must be a positive whole number or -1 (automatic), got {value!r}")
        if not isinstance(self.group_overrides, Mapping):
            raise UserInputError(f"group_overrides must map group names to settings, got {self.group_overrides!r}")


@dataclass(frozen=True)
class Gen2Plan:
    """Every number a generation-2 run derives from its settings and model size (see the module docstring)."""

    scaling_params: int
    reference_scaling_params: int
    target_tokens: int
    reference_tokens: float
    total_batch_size: int
    batch_lr_scale: float
    weight_decay: float  # Muon's, scaled (its peak: the schedule decays it to 0)
    num_iterations: int
    horizon_source: str  # "num_iterations", "target_flops" or "target_param_data_ratio"
    group_lrs: dict  # name → LR before the schedule (see gen2_group_lrs)

    @property
    def total_tokens(self) -> int:
        return self.total_batch_size * self.num_iterations

    @property
    def tokens_per_scaling_param(self) -> float:
        return self.total_tokens / self.scaling_params


def plan_gen2(
    settings: Gen2Settings,
    *,
    scaling_params: int,
    reference_scaling_params: int,
    model_dim: int,
    flops_per_token: float | None = None,
    total_batch_size: int | None = None,
) -> Gen2Plan:
    """The run's batch, LRs, weight decay and number of updates (nanochat's base_train arithmetic).

    `scaling_params` is the model's (matrices + lm_head), `reference_scaling_params` the d12 reference's
    (`gen2_scaling_params(settings.reference_depth, ...)`). For SFT (`settings.sft`), pass the pretraining
    run's `total_batch_size` (nanochat inherits it; 524,288 otherwise) and `num_iterations` (one pass over
    the data). Raises `UserInputError` for settings that give no update.
    """
    settings.validate()
    if scaling_params <= 0 or reference_scaling_params <= 0:
        raise UserInputError(
            f"scaling parameters must be positive, got {scaling_params} and {reference_scaling_params}"
        )
    ratio = settings.target_param_data_ratio
    if settings.sft:
        batch = total_batch_size or (
            settings.total_batch_size if settings.total_batch_size > 0 else REFERENCE_BATCH_SIZE
        )
        if settings.num_iterations <= 0:
            raise UserInputError("SFT: num_iterations must be set (the updates of one pass over the mixture)")
        lrs = gen2_group_lrs(model_dim, **settings.base_lrs())
        lrs = {name: lr * settings.init_lr_frac for name, lr in lrs.items()}
        return Gen2Plan(
            scaling_params=scaling_params,
            reference_scaling_params=reference_scaling_params,
            target_tokens=batch * settings.num_iterations,
            reference_tokens=float("nan"),
            total_batch_size=batch,
            batch_lr_scale=1.0,
            weight_decay=settings.weight_decay,
            num_iterations=settings.num_iterations,
            horizon_source="num_iterations",
            group_lrs=lrs,
        )

    if ratio == -1 and settings.num_iterations == -1 and settings.target_flops == -1:
        raise UserInputError("no training horizon: set target_param_data_ratio, num_iterations or target_flops")
    # The batch and the weight decay depend on D/D_ref only, where the ratio cancels; nanochat computes
    # them the same way when the horizon comes from num_iterations or FLOPs (or the ratio is disabled).
    horizon_ratio = ratio if ratio > 0 else DEFAULT_RATIO
    target_tokens = int(horizon_ratio * scaling_params)
    reference_tokens = horizon_ratio * reference_scaling_params
    if target_tokens <= 0:
        raise UserInputError(f"target_param_data_ratio {ratio} × {scaling_params:,} scaling params gives no tokens")
    batch = total_batch_size or settings.total_batch_size
    if batch == -1:
        batch = auto_total_batch_size(target_tokens, reference_tokens)
    bls = batch_lr_scale(batch)
    weight_decay = scaled_weight_decay(settings.weight_decay, batch, reference_tokens, target_tokens)

    if settings.num_iterations > 0:
        iterations, source = settings.num_iterations, "num_iterations"
    elif settings.target_flops > 0:
        if not flops_per_token:
            raise UserInputError("target_flops needs the model's FLOPs per token (flops_per_token=...)")
        iterations, source = round(settings.target_flops / (flops_per_token * batch)), "target_flops"
    else:
        iterations, source = target_tokens // batch, "target_param_data_ratio"
    if iterations <= 0:
        raise UserInputError(
            f"the horizon gives 0 updates: {source} → {target_tokens:,} tokens (ratio {ratio}) with a total "
            f"batch of {batch:,} tokens per update; raise target_param_data_ratio or lower total_batch_size"
            if source == "target_param_data_ratio"
            else f"the horizon gives 0 updates ({source} = {getattr(settings, source)}, total batch {batch:,})"
        )
    lrs = gen2_group_lrs(model_dim, batch_lr_scale=bls, **settings.base_lrs())
    return Gen2Plan(
        scaling_params=scaling_params,
        reference_scaling_params=reference_scaling_params,
        target_tokens=target_tokens,
        reference_tokens=reference_tokens,
        total_batch_size=batch,
        batch_lr_scale=bls,
        weight_decay=weight_decay,
        num_iterations=iterations,
        horizon_source=source,
        group_lrs=lrs,
    )


def plan_gen2_depth(depth: int, settings: Gen2Settings | None = None, **shape) -> Gen2Plan:
    """`plan_gen2` for a nanochat-shaped depth (closed-form counts); `shape`: vocab_size, pad_vocab_to, ..."""
    settings = settings or Gen2Settings()
    rule = dict(aspect_ratio=settings.aspect_ratio, head_dim=settings.head_dim, **shape)
    width, _ = gen2_width(depth, settings.aspect_ratio, settings.head_dim)
    return plan_gen2(
        settings,
        scaling_params=gen2_scaling_params(depth, **rule),
        reference_scaling_params=gen2_scaling_params(settings.reference_depth, **rule),
        model_dim=width,
    )
