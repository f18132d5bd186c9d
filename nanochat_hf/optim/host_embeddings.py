"""Embedding tables that stay in CPU RAM in fp32 while the rest of the model trains on the GPU
(memory knob `embedding_location: cpu_rows`, generation 2's memory modes `24gb` and `12gb`).

Generation 2's wte and value embeddings are large and sparsely used: d24 has 604 M value-embedding
parameters and 50 M in wte, of its 1.38 B, while a micro-batch of B x T tokens touches at most B x T
rows of each table. `place_embeddings_on_host(model, embedding_dtype)` replaces each of those
`nn.Embedding`s by a `HostEmbedding`:

- its `weight` is an fp32 `nn.Parameter` that stays on the CPU in fp32 whatever the model is moved or
  cast to (`model.to("cuda")`, `.to(torch.bfloat16)`, accelerate's `prepare`): the module's `_apply`
  leaves it alone. A dtype cast of the model (`.to(torch.bfloat16)`, `.half()`, `.float()`) sets the dtype
  of the rows it gathers instead.
- forward(input_ids): the unique ids of the batch (`torch.unique(..., return_inverse=True)`, computed once
  per forward and shared by all tables of the model, which are looked up with the same `input_ids`);
  only those rows are gathered from the fp32 weight, cast to `embedding_dtype`, copied to `input_ids`'
  device (through a pinned staging buffer, non-blocking, on CUDA) and looked up there with the inverse
  indices. With gradients enabled the gathered rows are a leaf; once backward has summed their gradient
  (per row, over the batch's tokens) a hook adds it, in fp32, into the host weight's dense fp32 `.grad`
  with `index_add_` and frees it on the GPU. Gradient accumulation over micro-steps is therefore an fp32
  sum in CPU RAM, and `zero_grad(set_to_none=True)` resets it as for any parameter.
- The optimizer is the model's own (`NanoChatGen2MuonAdamW`): the tables are ordinary parameters of its
  `embedding` and `value_embeds` AdamW groups, updated on the CPU in fp32 (torch's AdamW groups tensors
  by device), with their moments in fp32 in CPU RAM, under the same LR schedule and `state_dict()`.
- `state_dict()` keys are unchanged (`transformer.wte.weight`, `transformer.value_embeds.{i}.weight`), so
  a saved folder loads in a plain model and a plain checkpoint loads into a placed one.

Precision: nanochat itself keeps wte and the value embeddings in bf16 on the GPU (their weights, their
gradients and their Adam moments). Here the master weights, their gradient sums over the micro-steps and
their AdamW moments are fp32; only the gathered rows (and each micro-batch's per-row gradient, which CUDA's
embedding backward sums in fp32 and rounds once) are in `embedding_dtype`. The updates are therefore
at least as precise as nanochat's.

Limits: one process only (DDP would not average a gradient the hook writes into `.grad` itself; the
training recipe refuses it); the tables' lookups must run outside activation-checkpointed regions (the
model looks them up in its trunk's forward, outside the checkpointed blocks), and `torch.compile` of the
trunk breaks its graph at `torch.unique`.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


GIB = 1024**3
# fp32 weight + fp32 gradient sum + fp32 AdamW exp_avg and exp_avg_sq, per host parameter.
HOST_BYTES_PER_PARAM = 16


class RowIndex:
    """The unique ids (on the CPU) and inverse indices (on the ids' device) of the last `input_ids` seen,
    so the tables of one model, all looked up with the same tensor in one forward, compute them once."""

    def __init__(self):
        self._ids = None
        self._version = None
        self._result = None
        self.computed = 0  # how many times the unique ids were computed (tests read it)

    def __call__(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # A strong reference to the last ids: that tensor cannot be freed and its identity reused meanwhile.
        if self._ids is input_ids and self._version == input_ids._version:
            return self._result
        unique, inverse = torch.unique(input_ids, return_inverse=True)
        self._ids, self._version = input_ids, input_ids._version
        self._result = (unique.to("cpu"), inverse)
        self.computed += 1
        return self._result

    def clear(self) -> None:
        self._ids = self._version = self._result = None


class HostEmbedding(nn.Module):
    """An embedding table whose fp32 weight stays in CPU RAM; forward gathers only the batch's rows
    (see the module docstring). `weight` keeps nn.Embedding's name, so state-dict keys are unchanged."""

    def __init__(self, weight: torch.Tensor, row_index: RowIndex, embedding_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        requires_grad = weight.requires_grad
        self.weight = nn.Parameter(
            weight.detach().to(device="cpu", dtype=torch.float32, copy=True), requires_grad=requires_grad
        )
        self.num_embeddings, self.embedding_dim = self.weight.shape
        self.padding_idx = None
        self.row_index = row_index
        self.embedding_dtype = embedding_dtype
        self.gathered_rows = 0  # rows gathered by the last forward
        self._staging: torch.Tensor | None = None  # pinned CPU buffer for the rows copied to CUDA
        self._staging_free: torch.cuda.Event | None = None  # recorded after the last copy out of it

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, row_index: RowIndex, embedding_dtype: torch.dtype):
        if embedding.padding_idx is not None or embedding.max_norm is not None or embedding.sparse:
            raise ValueError("HostEmbedding replaces plain embeddings (no padding_idx, max_norm or sparse)")
        return cls(embedding.weight, row_index, embedding_dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, fp32 in CPU RAM, rows gathered in {self.embedding_dtype}"

    def _apply(self, fn, recurse=True):
        # Moves and casts of the model leave the fp32 host weight (and its gradient) where it is; a dtype
        # cast (the same dtype out of an fp32 and a bf16 probe) sets the dtype of the gathered rows.
        as_fp32, as_bf16 = fn(torch.empty(0)), fn(torch.empty(0, dtype=torch.bfloat16))
        if as_fp32.dtype == as_bf16.dtype and as_fp32.is_floating_point():
            self.embedding_dtype = as_fp32.dtype
        return self

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        unique, inverse = self.row_index(input_ids)
        rows = self._gather(unique, input_ids.device)
        self.gathered_rows = rows.shape[0]
        if torch.is_grad_enabled() and self.weight.requires_grad:
            rows.requires_grad_(True)
            rows.register_post_accumulate_grad_hook(self._accumulate_hook(unique))
        return F.embedding(inverse, rows)

    def _gather(self, unique: torch.Tensor, device: torch.device) -> torch.Tensor:
        weight = self.weight.detach()
        if device.type != "cuda":
            # index_select makes a new tensor, never a view of the weight.
            return weight.index_select(0, unique).to(device=device, dtype=self.embedding_dtype)
        staging = self._staging_rows(unique.shape[0])
        if self._staging_free is not None:
            self._staging_free.synchronize()  # the previous copy out of the buffer has finished
        if staging.dtype == torch.float32:
            torch.index_select(weight, 0, unique, out=staging)
        else:
            staging.copy_(weight.index_select(0, unique))
        rows = staging.to(device, non_blocking=True)
        self._staging_free = torch.cuda.Event()
        self._staging_free.record()
        return rows

    def _staging_rows(self, count: int) -> torch.Tensor:
        buffer = self._staging
        if buffer is None or buffer.shape[0] < count or buffer.dtype != self.embedding_dtype:
            if self._staging_free is not None:
                self._staging_free.synchronize()
            capacity = min(self.num_embeddings, max(count, int(1.25 * (0 if buffer is None else buffer.shape[0]))))
            buffer = torch.empty(capacity, self.embedding_dim, dtype=self.embedding_dtype, pin_memory=True)
            self._staging = buffer
        return buffer[:count]

    def _accumulate_hook(self, unique: torch.Tensor):
        weight = self.weight

        def accumulate(rows: torch.Tensor) -> None:
            grad, rows.grad = rows.grad, None  # freed on the GPU at once
            grad = grad.to(device="cpu", dtype=torch.float32)
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight)
            weight.grad.index_add_(0, unique, grad)

        return accumulate


def _trunk(model: nn.Module) -> nn.Module:
    trunk = getattr(model, "transformer", model)
    if not hasattr(trunk, "wte") or not hasattr(trunk, "value_embeds"):
        raise ValueError(f"{type(model).__name__} is not a nanochat model (no transformer.wte / value_embeds)")
    return trunk


def host_embeddings(model: nn.Module) -> dict[str, HostEmbedding]:
    """The model's host tables by module name ({} when none were placed)."""
    return {name: module for name, module in model.named_modules() if isinstance(module, HostEmbedding)}


@dataclass
class HostPlacement:
    """What `place_embeddings_on_host` put in CPU RAM."""

    tables: dict[str, HostEmbedding]
    embedding_dtype: torch.dtype

    @property
    def num_params(self) -> int:
        return sum(table.weight.numel() for table in self.tables.values())

    @property
    def row_width(self) -> int:
        """Values per token over all tables (n_embd + value tables x kv_dim)."""
        return sum(table.embedding_dim for table in self.tables.values())

    def describe(self, device: str = "GPU") -> str:
        n_ve = sum(1 for name in self.tables if ".value_embeds." in f".{name}")
        weights = self.num_params * 4
        dtype = str(self.embedding_dtype).removeprefix("torch.")
        return (
            f"embedding_location cpu_rows: wte and {n_ve} value-embedding tables ({self.num_params / 1e6:.1f} M "
            f"params) in CPU RAM, {_size(HOST_BYTES_PER_PARAM * self.num_params)} there ({_size(weights)} fp32 "
            f"weights, {_size(weights)} fp32 gradient sums, {_size(2 * weights)} fp32 AdamW moments); each "
            f"micro-step gathers only its unique tokens' rows onto the {device} in {dtype} "
            f"({self.row_width} values per row)"
        )


def _size(num_bytes: int) -> str:
    return f"{num_bytes / GIB:.2f} GiB" if num_bytes >= GIB else f"{num_bytes / 2**20:.1f} MiB"


def place_embeddings_on_host(model: nn.Module, embedding_dtype: torch.dtype = torch.bfloat16) -> HostPlacement:
    """Replace the model's wte and value embeddings by `HostEmbedding`s in place (see the module docstring).

    Call it before the optimizer is built (the optimizer must hold the new parameters). The weights are
    copied to fp32 in CPU RAM from wherever they are; calling it again on a placed model changes nothing
    but the gathered dtype.
    """
    trunk = _trunk(model)
    existing = host_embeddings(model)
    if existing:
        for table in existing.values():
            table.embedding_dtype = embedding_dtype
        return HostPlacement(existing, embedding_dtype)
    row_index = RowIndex()
    wte = HostEmbedding.from_embedding(trunk.wte, row_index, embedding_dtype)
    # Registered again after the blocks, so the model's first parameter (PreTrainedModel.device / .dtype)
    # is one of the weights on the GPU.
    del trunk._modules["wte"]
    trunk.wte = wte
    for key in list(trunk.value_embeds.keys()):
        trunk.value_embeds[key] = HostEmbedding.from_embedding(trunk.value_embeds[key], row_index, embedding_dtype)
    return HostPlacement(host_embeddings(model), embedding_dtype)


def cpu_rows_gpu_bytes(n_embd: int, kv_dim: int, n_value_tables: int, vocab: int, tokens: int, dtype_bytes: int):
    """GPU bytes one micro-step of `tokens` tokens (B x T) adds for the gathered rows, at most.

    U = min(tokens, vocab) unique rows. From the forward to the end of backward: the rows of every table
    (U x (n_embd + n_value_tables x kv_dim) x dtype_bytes), the inverse indices (tokens x 8) and the
    unique ids (U x 8); during backward, the row gradient of one table at a time (U x max width x
    dtype_bytes, freed by the hook). The tables' lookup outputs (tokens x width) are the same as with the
    tables on the GPU.
    """
    unique = min(tokens, vocab)
    width = n_embd + n_value_tables * kv_dim
    widest = max(n_embd, kv_dim if n_value_tables else 0)
    return unique * width * dtype_bytes + unique * widest * dtype_bytes + tokens * 8 + unique * 8
