"""Sharding evaluation work over processes (`accelerate launch`, `torchrun`, the Trainer's processes).

Every evaluator strides its examples over the processes (process r takes examples r, r + W, r + 2W, ...),
writes its outcomes into a vector as long as the whole task, and the vectors are summed over processes,
so every process ends with every outcome. Without an initialised process group everything is local.
"""

import torch


def _group():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed
    return None


def rank_and_world_size() -> tuple[int, int]:
    dist = _group()
    return (dist.get_rank(), dist.get_world_size()) if dist is not None else (0, 1)


def is_main_process() -> bool:
    return rank_and_world_size()[0] == 0


def sum_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """Elementwise sum over all processes (in place; the tensor must be on the backend's device)."""
    dist = _group()
    if dist is not None and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def reduction_device(model_device: torch.device) -> torch.device:
    """Where a tensor must be for the all-reduce: the GPU with NCCL, the CPU with gloo."""
    dist = _group()
    if dist is not None and dist.get_backend() == "nccl":
        return model_device
    return torch.device("cpu")
