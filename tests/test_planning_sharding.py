"""The sharded run's byte and communication model (`nanochat_hf/planning/sharding.py`); the byte model is also
checked against real tensors in tests/test_optim_sharded.py."""

import pytest

from nanochat_hf.configuration_nanochat_hf import NanoChatHFConfig
from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.flops import ModelShape
from nanochat_hf.planning.memory import static_memory
from nanochat_hf.planning.memory_modes import MEMORY_MODES, MemoryKnobs
from nanochat_hf.planning.sharding import (
    communication_bytes_per_step,
    sharded_optimizer_state_bytes,
    static_gpu_bytes_per_rank,
)


def shape_of(depth):
    return ModelShape.from_config(NanoChatHFConfig.from_depth(depth, vocab_size=65536, sequence_len=2048))


def test_unsharded_state_and_static_bytes_are_the_memory_model():
    shape, knobs = shape_of(20), MEMORY_MODES["full"]
    static = static_memory(shape, knobs)
    assert sharded_optimizer_state_bytes(shape, knobs, 1) == static.gpu_optimizer_state
    assert static_gpu_bytes_per_rank(shape, knobs, 8, "ddp_replicated") == static.gpu_total


def test_uneven_shares_sum_to_the_unsharded_state():
    shape, knobs = shape_of(20), MEMORY_MODES["full"]  # 20 matrices of each shape over 8 ranks
    per_rank = [sharded_optimizer_state_bytes(shape, knobs, 8, rank=rank) for rank in range(8)]
    steps = 2 * 4 * 7  # wte's and lm_head's `step`, on every rank
    assert sum(per_rank) - steps == sharded_optimizer_state_bytes(shape, knobs, 1)
    assert per_rank[0] == max(per_rank) > per_rank[7]


def test_layouts_order_by_memory_and_communication():
    shape, knobs = shape_of(32), MEMORY_MODES["full"]
    replicated, sharded, fsdp = (
        static_gpu_bytes_per_rank(shape, knobs, 8, layout)
        for layout in ("ddp_replicated", "ddp_sharded", "fsdp2_sharded_muon")
    )
    assert replicated > sharded > fsdp
    volume = {
        layout: communication_bytes_per_step(shape, 8, layout).total
        for layout in ("ddp_replicated", "ddp_sharded", "fsdp2_adamw", "fsdp2_sharded_muon")
    }
    assert volume["ddp_replicated"] < volume["ddp_sharded"] and volume["fsdp2_adamw"] < volume["fsdp2_sharded_muon"]
    assert communication_bytes_per_step(shape, 1, "ddp_sharded").total == 0


def test_bad_inputs_are_refused():
    shape = shape_of(4)
    with pytest.raises(UserInputError, match="layout must be one of"):
        communication_bytes_per_step(shape, 8, "zero3")
    with pytest.raises(UserInputError, match="8-bit optimizer state"):
        sharded_optimizer_state_bytes(shape, MEMORY_MODES["24gb"], 8)
    with pytest.raises(UserInputError, match="rank must be in 0..7"):
        sharded_optimizer_state_bytes(shape, MemoryKnobs(), 8, rank=8)
