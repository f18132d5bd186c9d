"""The sharded Muon + AdamW (`nanochat_hf/optim/sharded.py`): 2 CPU processes (gloo, torchrun) against 1.

Each distributed run goes through `tests/sharded_worker.py` under the real launcher, with real DDP or
FSDP2 (`fully_shard`) around the model; the reference is the same loop in this process, one process
accumulating the two ranks' halves of every batch.
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sharded_worker
import torch

from nanochat_hf.errors import UserInputError
from nanochat_hf.optim import build_optimizer
from nanochat_hf.optim.sharded import ShardedNanoChatMuonAdamW, check_shardable, shard_optimizer
from nanochat_hf.planning.flops import ModelShape
from nanochat_hf.planning.memory import adamw_state_bytes, muon_state_bytes
from nanochat_hf.planning.memory_modes import MemoryKnobs
from nanochat_hf.planning.sharding import sharded_optimizer_state_bytes


TESTS = Path(__file__).resolve().parent
STEPS = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(tmp_path, name, **settings) -> list[dict]:
    out = tmp_path / f"{name}.json"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(TESTS / "sharded_worker.py"),
        json.dumps({**settings, "out": str(out)}),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


def as_steps(losses: dict) -> dict[int, float]:
    return {int(step): value for step, value in losses.items()}


@pytest.fixture(scope="module")
def references():
    torch.set_num_threads(1)
    return {g: sharded_worker.train({"generation": g, "layout": "single", "steps": STEPS}) for g in (1, 2)}


@pytest.mark.parametrize("generation", [1, 2])
@pytest.mark.parametrize("layout", ["ddp", "fsdp2"])
def test_two_sharded_processes_equal_one_process_with_double_accumulation(tmp_path, references, generation, layout):
    reference = as_steps(references[generation]["losses"])
    assert reference[STEPS] < reference[1] - 1.0  # the model learns: the updates matter
    ranks = launch(tmp_path, "run", generation=generation, layout=layout, steps=STEPS)
    for rank in ranks:
        losses = as_steps(rank["losses"])
        assert losses.keys() == reference.keys()
        for step, value in reference.items():
            assert losses[step] == pytest.approx(value, abs=1e-5), step


@pytest.mark.parametrize("layout", ["ddp", "fsdp2"])
def test_uneven_shares_of_the_matrices_train_the_same_model(tmp_path, layout):
    """3 layers: 3 matrices of each shape, rank 0 owns 2 and rank 1 owns 1 (the all-gather pads)."""
    reference = as_steps(
        sharded_worker.train({"generation": 1, "layout": "single", "steps": 8, "n_layer": 3})["losses"]
    )
    ranks = launch(tmp_path, "uneven", generation=1, layout=layout, steps=8, n_layer=3)
    for rank in ranks:
        losses = as_steps(rank["losses"])
        for step, value in reference.items():
            assert losses[step] == pytest.approx(value, abs=1e-5), step
    if layout == "ddp":
        shape = ModelShape.from_config(sharded_worker.gen1_config(3))
        for rank in ranks:
            expected = sharded_optimizer_state_bytes(shape, MemoryKnobs(), 2, rank=rank["rank"])
            assert rank["state_bytes"] == expected
        assert ranks[0]["state_bytes"] > ranks[1]["state_bytes"]


def test_optimizer_state_per_rank_is_half_of_one_process_byte_exact(tmp_path, references):
    """Generation 1 under DDP: each rank's state bytes are the planner's, and 1/2 of the unsharded state
    (the 4-byte AdamW `step` counters, one per AdamW tensor, are on every rank)."""
    shape = ModelShape.from_config(sharded_worker.gen1_config())
    knobs = MemoryKnobs()
    unsharded = references[1]["state_bytes"]
    assert unsharded == sharded_optimizer_state_bytes(shape, knobs, 1)
    assert unsharded == muon_state_bytes(shape, knobs) + adamw_state_bytes(shape, knobs)
    ranks = launch(tmp_path, "bytes", generation=1, layout="ddp", steps=2)
    steps_bytes = 2 * 4  # wte's and lm_head's `step`
    for rank in ranks:
        assert rank["state_bytes"] == sharded_optimizer_state_bytes(shape, knobs, 2)
        assert rank["state_bytes"] - steps_bytes == (unsharded - steps_bytes) // 2


@pytest.mark.parametrize(("generation", "layout"), [(2, "ddp"), (1, "fsdp2")])
def test_resume_from_saved_shards_reproduces_the_losses(tmp_path, references, generation, layout):
    saved = tmp_path / "saved"
    first = launch(
        tmp_path, "first", generation=generation, layout=layout, steps=STEPS, save_at=10, save_dir=str(saved)
    )
    assert sorted(p.name for p in saved.glob("optimizer.rank*.pt")) == ["optimizer.rank0.pt", "optimizer.rank1.pt"]
    second = launch(tmp_path, "second", generation=generation, layout=layout, steps=STEPS, resume_dir=str(saved))
    reference = as_steps(references[generation]["losses"])
    resumed = {**as_steps(first[0]["losses"]), **as_steps(second[0]["losses"])}
    assert resumed.keys() == reference.keys()
    for step, value in reference.items():
        assert resumed[step] == pytest.approx(value, abs=1e-5), step


# ---- bad combinations fail before training


def muon_group(*shapes):
    return {"kind": "muon", "name": "muon_test", "params": [torch.zeros(shape) for shape in shapes]}


def test_a_group_whose_matrices_the_processes_cannot_share_is_refused():
    with pytest.raises(UserInputError, match="has 3 matrices, which 2 processes cannot share"):
        check_shardable([muon_group((4, 4), (4, 4), (4, 4))], 2, where="test", even=True)
    check_shardable([muon_group((4, 4), (4, 4))], 2, where="test", even=True)
    check_shardable([muon_group((4, 4), (4, 4), (4, 4))], 2, where="test", even=False)  # uneven shares allowed


def test_a_muon_parameter_that_is_not_a_matrix_is_refused():
    with pytest.raises(UserInputError, match=r"shape \(4,\).*whole 2-D matrices"):
        check_shardable([muon_group((4,), (4,))], 2, where="test")


def test_a_shard_saved_by_another_world_size_is_refused(tiny_config):
    from nanochat_hf import NanoChatHFForCausalLM

    optimizer = shard_optimizer(build_optimizer(NanoChatHFForCausalLM(tiny_config)))
    assert isinstance(optimizer, ShardedNanoChatMuonAdamW) and optimizer.world_size == 1
    state = optimizer.state_dict()
    assert state["sharding"] == {"rank": 0, "world_size": 1}
    optimizer.load_state_dict(state)
    state["sharding"] = {"rank": 1, "world_size": 2}
    with pytest.raises(UserInputError, match="saved by rank 1 of 2 processes"):
        optimizer.load_state_dict(state)


def test_memory_mode_optimizers_are_not_sharded(tiny_config):
    from nanochat_hf import NanoChatHFForCausalLM

    with pytest.raises(UserInputError, match="cannot shard a AdamW.*memory_mode full"):
        shard_optimizer(torch.optim.AdamW(NanoChatHFForCausalLM(tiny_config).parameters()))
