"""Which optimizer a training stage builds for its distributed layout, and how sharded state is checkpointed.

`sharded_optimizer` (a stage's optimizer setting, `--sharded_optimizer` on the command line):

| layout                       | auto (default)            | muon                   | replicated           | adamw            |
|------------------------------|---------------------------|------------------------|----------------------|------------------|
| one process                  | nanochat's optimizer      | the same               | the same             | AdamW fallback   |
| DDP (MULTI_GPU, no sharding) | replicated Muon (as today)| ZeRO-2 sharded state   | replicated Muon      | AdamW fallback   |
| FSDP2 (`fsdp_version: 2`)    | sharded Muon on DTensors  | sharded Muon           | error                | AdamW fallback   |
| FSDP1, DeepSpeed (any stage) | error                     | error                  | error                | AdamW fallback   |

Nothing switches to AdamW unless asked: FSDP1 flattens parameters and DeepSpeed ZeRO hands the optimizer
flat partitions, so neither can give Muon whole matrices, and those runs stop before training with a message
naming the alternatives. The AdamW fallback (`sharded_optimizer: adamw`) uses nanochat's routing and
embedding / head LRs and its OWN matrix LR, `adamw_matrix_lr`, by default
`ADAMW_FALLBACK_MATRIX_LR`·(d/768)^-0.5, never Muon's 0.02; the reason is `ADAMW_FALLBACK_REASON`.

Sharded optimizer state is one file per process: `optimizer.rank{r}-of-{N}.pt`, plus `optimizer.pt`, which
then only lists them (so a checkpoint still has its `optimizer.pt`). A resume with another number of
processes is refused with that message.
"""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import save_fsdp_model
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, get_fsdp_ckpt_kwargs

from ..errors import UserInputError
from ..optim import adamw_param_groups_for_fallback
from ..optim.muon_adamw import LR_REFERENCE_DIM
from ..optim.sharded import ShardedStepMixin, shard_optimizer


logger = logging.getLogger(__name__)

CHOICES = ("auto", "muon", "replicated", "adamw")
# Optimizer settings that choose the optimizer, not hyper-parameters of nanochat's optimizer.
DISTRIBUTION_KEYS = ("sharded_optimizer", "adamw_matrix_lr")
# AdamW's per-element step is about lr whatever the gradient's scale; Muon's orthogonalised step at lr 0.02
# moves an element of a d x d matrix by about 0.02/sqrt(d) (7.2e-4 at d = 768). 6e-4 is the AdamW LR GPT-2
# small (d = 768) was trained with, the same order; wider models get (d/768)^-0.5 of it, as nanochat's
# other AdamW LRs do. (Not tuned by a sweep at scale: an LR derived from the update sizes.)
ADAMW_FALLBACK_MATRIX_LR = 6e-4
ADAMW_FALLBACK_REASON = (
    "AdamW moves every weight by about its LR per step while Muon's orthogonalised step moves an element of a "
    "d x d matrix by about 0.02/sqrt(d), so Muon's 0.02 would be ~30x too large for AdamW; the fallback uses "
    f"{ADAMW_FALLBACK_MATRIX_LR} x (d/{LR_REFERENCE_DIM})^-0.5 (GPT-2 small's AdamW LR at d = 768)"
)
SHARD_FILE = "optimizer.rank{rank}-of-{world_size}.pt"


@dataclass
class ShardedOptimizerArguments:
    """The recipe fields that choose a multi-process run's optimizer (pretraining and SFT configs)."""

    sharded_optimizer: str = field(
        default="auto",
        metadata={
            "help": "auto | muon | replicated | adamw. Which optimizer a multi-process run uses. auto: nanochat's "
            "Muon+AdamW replicated under DDP, sharded Muon under FSDP2 (FSDP1/DeepSpeed stop with a message); "
            "muon: Muon+AdamW with its state sharded 1/N per process (DDP: ZeRO-2 style; FSDP2); replicated: every "
            "DDP process keeps the whole state; adamw: the explicit AdamW-only fallback (any layout)."
        },
    )
    adamw_matrix_lr: float | None = field(
        default=None,
        metadata={
            "help": "Block-matrix LR of the AdamW fallback (sharded_optimizer adamw). Default 6e-4 x (d/768)^-0.5: "
            "AdamW steps every weight by ~its LR, Muon at 0.02 by ~0.02/sqrt(d), so Muon's LR is far too high."
        },
    )


def distributed_layout(trainer) -> str:
    """'single', 'ddp', 'fsdp1', 'fsdp2' or 'deepspeed-N' (the ZeRO stage) for a transformers Trainer."""
    if trainer.is_deepspeed_enabled:
        stage = trainer.accelerator.state.deepspeed_plugin.zero_stage
        return f"deepspeed-{stage}"
    if trainer.is_fsdp_enabled:
        return f"fsdp{trainer.accelerator.state.fsdp_plugin.fsdp_version}"
    return "ddp" if trainer.args.world_size > 1 else "single"


def resolve_optimizer_choice(layout: str, choice: str) -> str:
    """'nanochat' (the unsharded optimizer), 'sharded' or 'adamw' for `layout`; UserInputError if impossible."""
    if choice not in CHOICES:
        raise UserInputError(f"sharded_optimizer must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "adamw":
        return "adamw"
    if layout == "single":
        return "nanochat"
    if layout == "ddp":
        return "sharded" if choice == "muon" else "nanochat"
    if layout == "fsdp2":
        if choice == "replicated":
            raise UserInputError(
                "sharded_optimizer: replicated is for DDP; under FSDP2 every parameter is sharded, so use muon "
                "(sharded Muon, the default) or adamw"
            )
        return "sharded"
    if layout == "fsdp1":
        raise UserInputError(
            "FSDP1 flattens parameters into shards, so Muon cannot see whole matrices: set fsdp_version: 2 in the "
            "accelerate config (sharded Muon), train with DDP (accelerate_configs/multi_gpu.yaml, optionally "
            "--sharded_optimizer muon), or choose the AdamW fallback explicitly with --sharded_optimizer adamw"
        )
    stage = layout.split("-", 1)[1] if "-" in layout else "?"
    raise UserInputError(
        f"DeepSpeed ZeRO stage {stage} partitions the optimizer's tensors itself, so Muon cannot see whole matrices "
        "(stage 3 also shards the parameters). Use FSDP2 (accelerate_configs/fsdp.yaml) or DDP with "
        "--sharded_optimizer muon (nanochat's ZeRO-2-style sharding), or choose the AdamW fallback explicitly "
        "with --sharded_optimizer adamw"
    )


def adamw_fallback_matrix_lr(model, adamw_matrix_lr: float | None) -> float:
    if adamw_matrix_lr is not None:
        return adamw_matrix_lr
    width = getattr(getattr(model, "config", None), "n_embd", None) or LR_REFERENCE_DIM
    return ADAMW_FALLBACK_MATRIX_LR * (width / LR_REFERENCE_DIM) ** -0.5


def build_adamw_fallback(model, settings: dict, adamw_matrix_lr: float | None, layout: str):
    """torch AdamW with nanochat's routing, embedding/head LRs and the fallback's own matrix LR."""
    lrs = {key: value for key, value in settings.items() if key in ("embedding_lr", "unembedding_lr")}
    matrix_lr = adamw_fallback_matrix_lr(model, adamw_matrix_lr)
    logger.warning(
        "sharded_optimizer=adamw (%s): AdamW for every parameter, Muon is not used; block matrices at "
        "adamw_matrix_lr=%.3g. Why not Muon's matrix_lr: %s",
        layout,
        matrix_lr,
        ADAMW_FALLBACK_REASON,
    )
    return torch.optim.AdamW(adamw_param_groups_for_fallback(model, matrix_lr=matrix_lr, **lrs))


def build_stage_optimizer(trainer, model, build_nanochat):
    """The optimizer `NanoChatTrainerMixin.create_optimizer` installs (see the module's table).

    `build_nanochat(model, settings)` builds the unsharded nanochat optimizer from the other settings.
    """
    settings = dict(trainer.optimizer_settings)
    choice = settings.pop("sharded_optimizer", None) or "auto"
    adamw_matrix_lr = settings.pop("adamw_matrix_lr", None)
    layout = distributed_layout(trainer)
    decision = resolve_optimizer_choice(layout, choice)
    if decision == "adamw":
        return build_adamw_fallback(model, settings, adamw_matrix_lr, layout)
    optimizer = build_nanochat(model, settings)
    if decision == "sharded":
        optimizer = shard_optimizer(optimizer)
        logger.info(
            "sharded Muon (%s, %d processes): each process keeps 1/%d of the optimizer state",
            layout,
            optimizer.world_size,
            optimizer.world_size,
        )
    return optimizer


def _save_atomically(payload, path: Path) -> None:
    """torch.save to a temporary name, then rename: a reader never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def sharded_optimizer_of(optimizer) -> ShardedStepMixin | None:
    """The sharded optimizer inside accelerate's wrapper, or None."""
    while optimizer is not None and not isinstance(optimizer, ShardedStepMixin):
        optimizer = getattr(optimizer, "optimizer", None)
    return optimizer


class ShardedOptimizerCheckpoints:
    """Trainer mixin: a sharded optimizer's state saved and loaded one file per process."""

    def _save_optimizer_and_scheduler(self, output_dir):
        sharded = sharded_optimizer_of(self.optimizer)
        if sharded is None or sharded.world_size == 1:
            return super()._save_optimizer_and_scheduler(output_dir)
        Path(output_dir).mkdir(parents=True, exist_ok=True)  # the main process may not have made it yet
        if self.is_fsdp_enabled:
            # The Trainer saves FSDP's model shards in this method; keep that, the optimizer is ours.
            save_fsdp_model(
                self.accelerator.state.fsdp_plugin, self.accelerator, self.model, output_dir, **get_fsdp_ckpt_kwargs()
            )
        rank, world_size = sharded.rank, sharded.world_size
        _save_atomically(sharded.state_dict(), Path(output_dir) / SHARD_FILE.format(rank=rank, world_size=world_size))
        if self.args.should_save:
            shards = [SHARD_FILE.format(rank=r, world_size=world_size) for r in range(world_size)]
            _save_atomically(
                {"sharded_optimizer": {"world_size": world_size, "shards": shards}}, Path(output_dir) / OPTIMIZER_NAME
            )
            _save_atomically(self.lr_scheduler.state_dict(), Path(output_dir) / SCHEDULER_NAME)

    def _load_optimizer_and_scheduler(self, checkpoint):
        if checkpoint is None:
            return None
        sharded = sharded_optimizer_of(self.optimizer)
        index_path = Path(checkpoint) / OPTIMIZER_NAME
        index = torch.load(index_path, weights_only=True) if index_path.is_file() else {}
        saved = index.get("sharded_optimizer") if isinstance(index, dict) else None
        if sharded is None or sharded.world_size == 1:
            if saved is not None:
                raise UserInputError(
                    f"{checkpoint}: its optimizer state is sharded over {saved['world_size']} processes; resume it "
                    f"with {saved['world_size']} processes and the same sharded_optimizer setting"
                )
            return super()._load_optimizer_and_scheduler(checkpoint)
        shard = Path(checkpoint) / SHARD_FILE.format(rank=sharded.rank, world_size=sharded.world_size)
        if saved is None or saved["world_size"] != sharded.world_size or not shard.is_file():
            found = "unsharded state" if saved is None else f"state sharded over {saved['world_size']} processes"
            raise UserInputError(
                f"{checkpoint}: expected {shard.name} for rank {sharded.rank} of {sharded.world_size} processes, found "
                f"{found}; resume a sharded run with the number of processes and sharded_optimizer it was saved with"
            )
        # On the CPU; load_state_dict moves each state tensor to its parameter's device.
        sharded.load_state_dict(torch.load(shard, map_location="cpu", weights_only=True))
        self.lr_scheduler.load_state_dict(torch.load(Path(checkpoint) / SCHEDULER_NAME, weights_only=True))
        return None


__all__ = [
    "ADAMW_FALLBACK_MATRIX_LR",
    "ADAMW_FALLBACK_REASON",
    "CHOICES",
    "DISTRIBUTION_KEYS",
    "ShardedOptimizerCheckpoints",
    "build_stage_optimizer",
    "distributed_layout",
    "resolve_optimizer_choice",
    "sharded_optimizer_of",
]
