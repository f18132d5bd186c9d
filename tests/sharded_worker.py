"""Training loop for the sharded-optimizer tests: one process (the reference) or one rank under torchrun.

`python -m torch.distributed.run --nproc_per_node 2 tests/sharded_worker.py '<json>'` trains a tiny model
with DDP or FSDP2 (gloo, CPU) and the sharded optimizer; `train(...)` called in-process with layout
"single" is the reference: the same global batch as gradient accumulation over the ranks' halves.
The JSON settings: generation (1 | 2), layout (single | ddp | fsdp2), steps, n_layer (generation 1; 2 by
default: 3 gives every matrix shape an odd count, shared unevenly by 2 ranks), out (a JSON file for the
losses and per-rank optimizer-state bytes), and optionally save_dir + save_at (write the model and this
rank's optimizer state after that step, then stop) or resume_dir (load them, then train to `steps`).
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel


sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gen2_fixtures import Gen2ShapedStandIn, randomize  # noqa: E402

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM  # noqa: E402
from nanochat_hf.optim import build_gen2_optimizer, build_optimizer  # noqa: E402
from nanochat_hf.optim.sharded import shard_optimizer  # noqa: E402


ROWS, SEQUENCE, VOCAB = 4, 16, 256  # a global batch of 4 rows, split over the processes


def gen1_config(n_layer: int = 2) -> NanoChatHFConfig:
    return NanoChatHFConfig(n_layer=n_layer, n_embd=64, n_head=4, n_kv_head=2, vocab_size=VOCAB, sequence_len=SEQUENCE)


def build_model(generation: int, n_layer: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    if generation == 1:
        return NanoChatHFForCausalLM(gen1_config(n_layer)).float()
    # 4 layers: two value-embedding layers, so every Muon shape has an even number of matrices.
    return randomize(Gen2ShapedStandIn(n_layer=4, n_embd=32, n_head=2, vocab_size=VOCAB))


def build_nanochat_optimizer(generation: int, model: torch.nn.Module, steps: int):
    if generation == 1:
        return build_optimizer(model, matrix_lr=0.05, momentum_warmup_steps=5)
    return build_gen2_optimizer(model, matrix_lr=0.05, num_iterations=steps, momentum_warmup_steps=5)


def batch(step: int) -> torch.Tensor:
    # Three batches in turn: a loss that can fall, so the updates matter.
    generator = torch.Generator().manual_seed(1000 + step % 3)
    return torch.randint(0, VOCAB, (ROWS, SEQUENCE), generator=generator)


def loss_of(model, rows: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=rows, labels=rows)
    return out["loss"] if isinstance(out, dict) else out.loss


def state_bytes(optimizer) -> int:
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )


def train(settings: dict) -> dict:
    generation, layout, steps = settings["generation"], settings["layout"], settings["steps"]
    distributed = layout != "single"
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    model = build_model(generation, settings.get("n_layer", 2))
    start = 0
    if settings.get("resume_dir"):
        saved = torch.load(Path(settings["resume_dir"]) / "model.pt", weights_only=True)
        model.load_state_dict(saved["model"])
        start = saved["step"]
    if layout == "fsdp2":
        # The generation-2 stand-in calls its blocks' linears directly, so each linear is its own FSDP unit.
        units = (
            model.transformer.h
            if generation == 1
            else [m for m in model.transformer.h.modules() if isinstance(m, torch.nn.Linear)]
        )
        for unit in units:
            fully_shard(unit)
        fully_shard(model)
        trained = model
    elif layout == "ddp":
        trained = DistributedDataParallel(model)
    else:
        trained = model
    optimizer = build_nanochat_optimizer(generation, model, steps)
    if distributed:
        optimizer = shard_optimizer(optimizer)
    if settings.get("resume_dir"):
        optimizer.load_state_dict(
            torch.load(Path(settings["resume_dir"]) / f"optimizer.rank{rank}.pt", weights_only=True)
        )
    losses = {}
    for step in range(start, steps):
        rows = batch(step)
        if distributed:
            loss = loss_of(trained, rows.chunk(world)[rank])
            loss.backward()
            logged = loss.detach().clone()
            dist.all_reduce(logged, op=dist.ReduceOp.AVG)
        else:
            logged = torch.zeros(())
            for part in rows.chunk(2):  # the 2-process run's halves, accumulated
                loss = loss_of(trained, part) / 2
                loss.backward()
                logged += loss.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses[step + 1] = logged.item()
        if settings.get("save_at") == step + 1:
            save(settings["save_dir"], model, optimizer, step + 1, rank, layout)
            break
    return {"losses": losses, "state_bytes": state_bytes(optimizer), "rank": rank, "world_size": world}


def save(folder: str, model, optimizer, step: int, rank: int, layout: str) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "fsdp2":
        full = {name: tensor.full_tensor() for name, tensor in model.state_dict().items()}
    else:
        full = model.state_dict()
    if rank == 0:
        torch.save({"model": full, "step": step}, folder / "model.pt")
    torch.save(optimizer.state_dict(), folder / f"optimizer.rank{rank}.pt")
    dist.barrier()


def main() -> None:
    settings = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    result = train(settings)
    results = [None] * dist.get_world_size()
    dist.all_gather_object(results, result)
    if dist.get_rank() == 0:
        Path(settings["out"]).write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
