"""What must hold before a checkpoint or final folder is written, and how a failed write is reported.

- Finite weights: a folder is saved only if every parameter is finite (a NaN that appears at a save step
  must not become a "good" checkpoint). `check_finite_weights` raises `NonFiniteError` otherwise.
- Free space: before writing, the free space of the output folder's file system is compared with the
  folder's size (the previous checkpoint's size when there is one, else the bytes of the weights and the
  optimizer state); too little raises `DiskFullError` before a byte is written.
- A write that fails for lack of space (`OSError` 28, or the messages torch's zip writer and safetensors
  give for it) is reported by `disk_full_error` as one line: the device, the file, the last good checkpoint.
"""

import shutil
from pathlib import Path

import torch

from ..atomic import mount_point
from ..errors import RunStoppedError


class DiskFullError(RunStoppedError):
    pass


class NonFiniteError(RunStoppedError):
    pass


# Head-room above the estimate (file headers, the model card, the tokenizer, metadata).
FREE_SPACE_MARGIN = 1.05
FREE_SPACE_SLACK_BYTES = 4 * 2**20


def describe_last_good(last_good) -> str:
    if last_good is None:
        return "no checkpoint was written before"
    return f"the last good checkpoint {last_good} is intact"


def failed_file(err: BaseException) -> str | None:
    while err is not None:
        if isinstance(err, OSError) and err.filename:
            return str(err.filename)
        err = err.__cause__ or err.__context__
    return None


def disk_full_error(err: BaseException, folder, last_good) -> DiskFullError:
    """One line for a write into `folder` that failed for lack of space."""
    file = failed_file(err) or str(folder)
    return DiskFullError(
        f"no space left on {mount_point(folder)} while writing {file}; {describe_last_good(last_good)} "
        "(nothing half-written was kept). Free some space, then resume with --resume_from_checkpoint last"
    )


def check_free_space(folder, needed_bytes: int, what: str, last_good) -> None:
    """Refuse to start writing `what` into `folder` when its file system has less than `needed_bytes` free."""
    existing = Path(folder).resolve()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    needed = int(needed_bytes * FREE_SPACE_MARGIN) + FREE_SPACE_SLACK_BYTES
    if free < needed:
        raise DiskFullError(
            f"not enough space on {mount_point(existing)} to write {what}: about {needed / 2**20:,.1f} MiB "
            f"needed, {free / 2**20:,.1f} MiB free; {describe_last_good(last_good)}. Free some space, then "
            "resume with --resume_from_checkpoint last"
        )


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def estimated_checkpoint_bytes(model, optimizer=None) -> int:
    """Bytes of the weights plus the optimizer state: what a checkpoint of `model` holds."""
    total = tensor_bytes(model.state_dict().values())
    if optimizer is not None:
        for state in getattr(optimizer, "state", {}).values():
            if isinstance(state, dict):
                total += tensor_bytes(state.values())
    return total


def nonfinite_parameters(model, limit: int = 3) -> list[str]:
    """Names of (at most `limit`) parameters holding a NaN or an infinity."""
    bad = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.numel() and not bool(torch.isfinite(param).all()):
                bad.append(name)
                if len(bad) >= limit:
                    break
    return bad


def check_finite_weights(model, what: str, last_good) -> None:
    """Refuse to save `what` when a weight is non-finite (on any process)."""
    bad = nonfinite_parameters(model)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.tensor([float(bool(bad))], device=next(model.parameters()).device)
        torch.distributed.all_reduce(flag)
        if flag.item() and not bad:
            bad = ["(a parameter on another process)"]
    if bad:
        raise NonFiniteError(
            f"weights became non-finite ({', '.join(bad)}); not saving {what}; {describe_last_good(last_good)}. "
            "Lower the learning rates or check the data, then resume from it"
        )
