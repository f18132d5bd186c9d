"""Both generations' Muon + AdamW with the optimizer state sharded across processes (ZeRO-2 style).

`ShardedNanoChatMuonAdamW` (generation 1) and `ShardedNanoChatGen2MuonAdamW` (generation 2) are the
generations' optimizers with a different `step`; the update math is theirs (their `_muon_step`, the shared
`adamw_group_step`), so a sharded run trains the same model as one process. Each is still ONE optimizer
object: the Trainer wraps it, the LR schedule drives its `param_groups`, and `state_dict()` holds this
process's share of the state (the Trainer saves one file per process, see `training/sharded_checkpoints.py`).

Who owns what, with N processes:
- **Muon matrices**: whole matrices. In every Muon group (matrices of one shape) matrix i belongs to rank
  i mod N (round-robin). When N divides every group's matrix count, every rank owns the same number of
  matrices of every size and exactly 1/N of the momentum buffers. Otherwise the first ranks own one matrix
  more of some shapes and the all-gather pads the others' stacks with zeros, as nanochat does (d20 has 20
  matrices of each shape: 8 GPUs own 3, 3, 3, 3, 2, 2, 2, 2); `even_shards=True` refuses that instead.
- **AdamW tensors**: rows. A tensor whose first dimension is a multiple of N is split into N row blocks,
  rank r updating and keeping `exp_avg`/`exp_avg_sq` for block r; any other (small) tensor is updated
  identically on every rank (its state replicated). `step` counters are replicated (4 bytes each).

Two layouts of the parameters, recognised per parameter:
- **DDP / replicated parameters** (plain tensors): gradients arrive averaged (DDP all-reduces them; pass
  `average_gradients=True` in a loop without DDP). The owner updates, then the updated matrices of each
  group are all-gathered (one collective per group) and every sharded AdamW tensor's row blocks too.
- **FSDP2 parameters** (`DTensor`, sharded on dim 0 by `fully_shard`): gradients arrive reduce-scattered.
  For each matrix the owner gathers the full gradient and parameter (`dist.gather` of the padded row
  shards), runs the Muon update on the whole matrix and scatters the new rows back (`dist.scatter`);
  Muon state exists only on the owner, full-size. AdamW runs on each rank's local shard (element-wise,
  so exact), its state shard-sized.

Communication per step, M = bytes of all Muon matrices, A = bytes of the AdamW tensors:
DDP: the gradient all-reduce DDP does anyway (~2·M + 2·A per rank), plus the all-gather of the updates
(~(N−1)/N·(M + A) received per rank). FSDP2: FSDP's own all-gathers and reduce-scatter, plus (N−1)/N·3·M
for the owner gathers (gradient and parameter) and scatters (new rows).
"""

import math
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard

from ..errors import UserInputError
from .adamw_update import adamw_group_step
from .muon_adamw import NanoChatMuonAdamW
from .muon_adamw_gen2 import NanoChatGen2MuonAdamW
from .muon_update_gen2 import muon_update_


SHARDING_KEY = "sharding"  # the top-level state_dict entry saying which rank of how many saved it


def _world(process_group) -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(process_group), dist.get_world_size(process_group)


def check_shardable(param_groups: list[dict[str, Any]], world_size: int, *, where: str, even: bool = True) -> None:
    """Clear errors, before any update, for groups that sharded Muon cannot split across `world_size`."""
    for group in param_groups:
        if group["kind"] != "muon":
            continue
        for param in group["params"]:
            if param.ndim != 2:
                raise UserInputError(
                    f"{where}: Muon group {group['name']!r} holds a parameter of shape {tuple(param.shape)}; "
                    "sharded Muon gives each process whole 2-D matrices, so every Muon parameter must be one"
                )
        count = len(group["params"])
        if even and count % world_size:
            raise UserInputError(
                f"{where}: Muon group {group['name']!r} has {count} matrices, which {world_size} processes cannot "
                f"share round-robin (each process owns whole matrices, the same number of each shape): use a "
                f"number of processes that divides {count}, allow uneven shares (even_shards=False), or "
                "sharded_optimizer: replicated (DDP) / adamw"
            )


def _row_counts(rows: int, world_size: int) -> list[int]:
    """Rows of each rank's shard when `rows` are split as torch.chunk (and FSDP2's Shard(0)) split them."""
    chunk = math.ceil(rows / world_size) if rows else 0
    return [max(0, min(chunk, rows - rank * chunk)) for rank in range(world_size)]


class ShardedStepMixin:
    """The sharded `step`; mixed into a generation's optimizer class (see the module docstring)."""

    is_sharded = True

    def __init__(
        self, params, *, process_group=None, average_gradients: bool = False, even_shards: bool = False, **kwargs
    ):
        self.process_group = process_group
        self.average_gradients = average_gradients
        self.even_shards = even_shards
        self.rank, self.world_size = _world(process_group)
        super().__init__(params, **kwargs)
        check_shardable(self.param_groups, self.world_size, where=type(self).__name__, even=even_shards)

    # ---- who owns what

    def owns_matrix(self, index: int) -> bool:
        return index % self.world_size == self.rank

    def adamw_rows(self, param: torch.Tensor) -> slice | None:
        """This rank's row block of a plain AdamW tensor, or None when the tensor is updated everywhere."""
        if self.world_size == 1 or param.ndim == 0 or param.shape[0] % self.world_size:
            return None
        block = param.shape[0] // self.world_size
        return slice(self.rank * block, (self.rank + 1) * block)

    # ---- state dict: a shard says whose it is

    def state_dict(self):
        state = super().state_dict()
        state[SHARDING_KEY] = {"rank": self.rank, "world_size": self.world_size}
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        saved = state_dict.pop(SHARDING_KEY, None)
        mine = {"rank": self.rank, "world_size": self.world_size}
        if saved is not None and saved != mine:
            raise UserInputError(
                f"{type(self).__name__}: this optimizer-state shard was saved by rank {saved['rank']} of "
                f"{saved['world_size']} processes, but is loaded by rank {self.rank} of {self.world_size}: resume a "
                "sharded run with the number of processes it was saved with"
            )
        super().load_state_dict(state_dict)

    # ---- the step

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.world_size == 1:
            super().step()
            return loss
        if self.average_gradients:
            self._average_gradients()
        for group in self.param_groups:
            if group["kind"] == "muon":
                if any(isinstance(p, DTensor) for p in group["params"]):
                    self._fsdp_muon_step(group)
                else:
                    self._ddp_muon_step(group)
            else:
                self._sharded_adamw_step(group)
        return loss

    def _average_gradients(self) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None and not isinstance(param.grad, DTensor):
                    dist.all_reduce(param.grad, op=dist.ReduceOp.AVG, group=self.process_group)

    def _owner_only_muon_step(self, group: dict[str, Any], owned: list[bool]) -> None:
        """The generation's own Muon update of `group`, for the matrices this rank owns only.

        The group's counters (momentum and weight-decay schedules) advance on every rank alike.
        """
        saved = [param.grad for param in group["params"]]
        for param, mine in zip(group["params"], owned, strict=True):
            if not mine:
                param.grad = None
        try:
            self._muon_step(group)
        finally:
            for param, grad in zip(group["params"], saved, strict=True):
                param.grad = grad

    def _ddp_muon_step(self, group: dict[str, Any]) -> None:
        params = group["params"]
        self._owner_only_muon_step(group, [self.owns_matrix(i) for i in range(len(params))])
        if not params:
            return
        # Every rank sends the same number of matrices: ranks owning one fewer pad with zeros.
        slots = math.ceil(len(params) / self.world_size)
        stack = params[0].new_zeros((slots, *params[0].shape))
        for slot, param in enumerate(params[self.rank :: self.world_size]):
            stack[slot] = param.detach()
        gathered = [torch.empty_like(stack) for _ in range(self.world_size)]
        dist.all_gather(gathered, stack, group=self.process_group)
        for rank, stacked in enumerate(gathered):
            for param, value in zip(params[rank :: self.world_size], stacked.unbind(0), strict=False):
                param.detach().copy_(value)

    def _fsdp_muon_step(self, group: dict[str, Any]) -> None:
        params = group["params"]
        full_params, owned_real = [], []
        for index, param in enumerate(params):
            owner = index % self.world_size
            full = self._gather_rows(param, owner)
            grad = None if param.grad is None else self._gather_rows(param.grad, owner)
            if owner == self.rank:
                full.grad = grad
                full_params.append(full)
                owned_real.append(param)
        # The generation's update on whole matrices: the owned ones, with their state, stand in for the group.
        for real, full in zip(owned_real, full_params, strict=True):
            if real in self.state:
                self.state[full] = self.state.pop(real)
        group["params"] = full_params
        try:
            self._muon_step(group)
        finally:
            group["params"] = params
            for real, full in zip(owned_real, full_params, strict=True):
                if full in self.state:
                    self.state[real] = self.state.pop(full)
        updated = iter(full_params)
        for index, param in enumerate(params):
            owner = index % self.world_size
            self._scatter_rows(next(updated) if owner == self.rank else None, param, owner)

    def _local_rows(self, tensor: DTensor) -> torch.Tensor:
        if tuple(tensor.placements) != (Shard(0),):
            raise UserInputError(
                f"{type(self).__name__}: a parameter is sharded as {tensor.placements}; sharded Muon under FSDP2 "
                "needs fully_shard's dim-0 sharding on a 1-D mesh (no HSDP / tensor parallelism)"
            )
        return tensor.to_local()

    def _gather_rows(self, tensor: DTensor, owner: int) -> torch.Tensor | None:
        """The whole tensor on `owner` (None elsewhere), from every rank's dim-0 shard."""
        local = self._local_rows(tensor)
        counts = _row_counts(tensor.shape[0], self.world_size)
        padded = local.new_zeros((max(counts), *local.shape[1:]))
        padded[: local.shape[0]] = local
        buffers = [torch.empty_like(padded) for _ in counts] if self.rank == owner else None
        dist.gather(padded, buffers, dst=owner, group=self.process_group)
        if self.rank != owner:
            return None
        return torch.cat([buffer[:count] for buffer, count in zip(buffers, counts, strict=True)])

    def _scatter_rows(self, full: torch.Tensor | None, param: DTensor, owner: int) -> None:
        """Each rank's rows of the owner's updated `full` into its shard of `param`."""
        local = self._local_rows(param)
        counts = _row_counts(param.shape[0], self.world_size)
        received = local.new_empty((max(counts), *local.shape[1:]))
        pieces = None
        if self.rank == owner:
            pieces = []
            for block in full.to(local.dtype).split(max(counts)):
                piece = torch.zeros_like(received)
                piece[: block.shape[0]] = block
                pieces.append(piece)
            pieces += [torch.zeros_like(received) for _ in range(self.world_size - len(pieces))]
        dist.scatter(received, pieces, src=owner, group=self.process_group)
        local.copy_(received[: local.shape[0]])

    def _sharded_adamw_step(self, group: dict[str, Any]) -> None:
        """AdamW on this rank's rows (plain tensors) or local shard (DTensors); replicated small tensors."""
        shards, state, gathers = [], {}, []
        for param in group["params"]:
            if param.grad is None:
                continue
            if isinstance(param, DTensor):
                shard, grad = param.to_local().detach(), param.grad.to_local().detach()
            else:
                rows = self.adamw_rows(param)
                if rows is None:
                    shard, grad = param.detach(), param.grad
                else:
                    shard, grad = param.detach()[rows], param.grad[rows]
                    gathers.append(param)
            shard.grad = grad
            shards.append(shard)
            state[shard] = self.state[param]  # the same dict: the update fills and advances it in place
        adamw_group_step(state, dict(group, params=shards), owner=type(self).__name__, float32_math=self.float32_adamw)
        for param in gathers:
            blocks = list(param.detach().chunk(self.world_size, dim=0))
            dist.all_gather(blocks, blocks[self.rank].clone(), group=self.process_group)


class ShardedNanoChatMuonAdamW(ShardedStepMixin, NanoChatMuonAdamW):
    """Generation 1's Muon + AdamW with its state sharded across processes (see the module docstring)."""

    float32_adamw = False


class ShardedNanoChatGen2MuonAdamW(ShardedStepMixin, NanoChatGen2MuonAdamW):
    """Generation 2's Muon + AdamW with its state sharded across processes (see the module docstring)."""

    float32_adamw = True


def shard_optimizer(optimizer, *, process_group=None, average_gradients: bool = False, even_shards: bool = False):
    """The sharded twin of a built `NanoChatMuonAdamW` / `NanoChatGen2MuonAdamW` (same groups and settings).

    Build the sharded optimizer after the model is wrapped (DDP) or sharded (FSDP2's `fully_shard`), from
    the parameters the wrapped model trains.
    """
    if isinstance(optimizer, ShardedStepMixin):
        return optimizer
    groups = [dict(group) for group in optimizer.param_groups]
    for group in groups:
        names = group.pop("param_names", None)
        if names is not None:
            group["params"] = list(zip(names, group["params"], strict=True))
    if type(optimizer) is NanoChatGen2MuonAdamW:
        return ShardedNanoChatGen2MuonAdamW(
            groups,
            process_group=process_group,
            average_gradients=average_gradients,
            even_shards=even_shards,
            stack_matrices=optimizer.stack_matrices,
            compile=optimizer._muon_update is not muon_update_,
        )
    if type(optimizer) is NanoChatMuonAdamW:
        return ShardedNanoChatMuonAdamW(
            groups, process_group=process_group, average_gradients=average_gradients, even_shards=even_shards
        )
    raise UserInputError(
        f"sharded Muon: cannot shard a {type(optimizer).__name__}; expected nanochat's NanoChatMuonAdamW or "
        "NanoChatGen2MuonAdamW. The memory modes' optimizers (8-bit state, offloading) keep their own state layout "
        "and are not sharded: use memory_mode full with the sharded optimizer"
    )
