"""Which optimizer a stage builds per distributed layout (`training/sharded_optimizer.py`), the explicit AdamW
fallback, and the sharded optimizer's per-process checkpoints through the real Trainer (2 gloo processes)."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from helpers import launch_pretraining_on_two_processes, tiny_pretrain_argv
from transformers import TrainerCallback

from nanochat_hf.errors import UserInputError
from nanochat_hf.training import parse_pretrain_arguments, run_pretraining
from nanochat_hf.training.sharded_optimizer import (
    ADAMW_FALLBACK_MATRIX_LR,
    adamw_fallback_matrix_lr,
    resolve_optimizer_choice,
)


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("layout", "choice", "expected"),
    [
        ("single", "auto", "nanochat"),
        ("single", "muon", "nanochat"),
        ("single", "adamw", "adamw"),
        ("ddp", "auto", "nanochat"),
        ("ddp", "replicated", "nanochat"),
        ("ddp", "muon", "sharded"),
        ("ddp", "adamw", "adamw"),
        ("fsdp2", "auto", "sharded"),
        ("fsdp2", "muon", "sharded"),
        ("fsdp2", "adamw", "adamw"),
        ("fsdp1", "adamw", "adamw"),
        ("deepspeed-2", "adamw", "adamw"),
        ("deepspeed-3", "adamw", "adamw"),
    ],
)
def test_the_optimizer_of_each_layout(layout, choice, expected):
    assert resolve_optimizer_choice(layout, choice) == expected


@pytest.mark.parametrize(
    ("layout", "choice", "message"),
    [
        ("deepspeed-3", "auto", "DeepSpeed ZeRO stage 3 partitions.*--sharded_optimizer adamw"),
        ("deepspeed-2", "muon", "DeepSpeed ZeRO stage 2 partitions"),
        ("fsdp1", "auto", "FSDP1 flattens parameters.*fsdp_version: 2"),
        ("fsdp2", "replicated", "replicated is for DDP"),
        ("ddp", "zero", "sharded_optimizer must be one of auto, muon, replicated, adamw"),
    ],
)
def test_combinations_muon_cannot_run_are_refused(layout, choice, message):
    with pytest.raises(UserInputError, match=message):
        resolve_optimizer_choice(layout, choice)


class CaptureOptimizer(TrainerCallback):
    def on_train_begin(self, args, state, control, optimizer=None, model=None, **kwargs):
        self.optimizer, self.width = optimizer, model.config.n_embd


def test_the_adamw_fallback_is_explicit_with_its_own_matrix_lr(tmp_path, tokenizer_dir, caplog):
    capture = CaptureOptimizer()
    args, training_args = parse_pretrain_arguments(
        tiny_pretrain_argv(tmp_path / "run", tokenizer_dir, max_steps=1, sharded_optimizer="adamw")
    )
    with caplog.at_level(logging.WARNING, logger="nanochat_hf.training.sharded_optimizer"):
        run_pretraining(args, training_args, extra_callbacks=[capture])
    optimizer = capture.optimizer.optimizer  # accelerate's wrapper around it
    assert type(optimizer) is torch.optim.AdamW
    groups = {group["name"]: group for group in optimizer.param_groups}
    expected = ADAMW_FALLBACK_MATRIX_LR * (capture.width / 768) ** -0.5
    assert groups["matrices"]["initial_lr"] == pytest.approx(expected)
    assert expected != pytest.approx(args.matrix_lr)
    assert "Why not Muon's matrix_lr" in caplog.text and "0.02/sqrt(d)" in caplog.text


def test_adamw_matrix_lr_overrides_the_default(tiny_config):
    from nanochat_hf import NanoChatHFForCausalLM

    model = NanoChatHFForCausalLM(tiny_config)
    assert adamw_fallback_matrix_lr(model, 1e-3) == 1e-3
    assert adamw_fallback_matrix_lr(model, None) == pytest.approx(6e-4 * (64 / 768) ** -0.5)


def losses(output_dir) -> dict[int, float]:
    state = json.loads((Path(output_dir) / "final" / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def test_sharded_ddp_pretraining_checkpoints_per_process_and_resumes(tmp_path, tokenizer_dir):
    """2 processes with the ZeRO-2-style sharded Muon through the Trainer: the losses of 1 process with double
    accumulation; each checkpoint holds one optimizer file per process; a resume reproduces the losses."""
    common = dict(max_steps=4, per_device_train_batch_size=8, save_strategy="steps", save_steps=2)
    args, training_args = parse_pretrain_arguments(tiny_pretrain_argv(tmp_path / "one", tokenizer_dir, **common))
    run_pretraining(args, training_args)
    two = tmp_path / "two"
    launch_pretraining_on_two_processes(tiny_pretrain_argv(two, tokenizer_dir, sharded_optimizer="muon", **common))
    one, straight = losses(tmp_path / "one"), losses(two)
    assert one.keys() == straight.keys() == {1, 2, 3, 4}
    for step in one:
        assert straight[step] == pytest.approx(one[step], abs=1e-4), step
    checkpoint = two / "checkpoint-2"
    assert (checkpoint / "optimizer.rank0-of-2.pt").is_file() and (checkpoint / "optimizer.rank1-of-2.pt").is_file()
    index = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert index["sharded_optimizer"]["world_size"] == 2
    shards = [torch.load(checkpoint / f"optimizer.rank{r}-of-2.pt", weights_only=True) for r in (0, 1)]
    assert [len(shard["state"]) for shard in shards] == [len(shards[0]["state"])] * 2  # each its own half

    # As after a kill during step 3: the later checkpoint and the final folder are gone.
    shutil.rmtree(two / "checkpoint-4")
    shutil.rmtree(two / "final")
    launch_pretraining_on_two_processes(
        tiny_pretrain_argv(two, tokenizer_dir, sharded_optimizer="muon", resume_from_checkpoint="last", **common)
    )
    resumed = losses(two)
    assert resumed.keys() == straight.keys()
    for step in straight:
        assert resumed[step] == pytest.approx(straight[step], abs=1e-5), step

    # One process cannot resume the 2-process optimizer state.
    args, training_args = parse_pretrain_arguments(
        tiny_pretrain_argv(two, tokenizer_dir, resume_from_checkpoint=str(checkpoint), **common)
    )
    with pytest.raises(UserInputError, match="sharded over 2 processes"):
        run_pretraining(args, training_args)


def test_chat_stages_take_the_same_settings(tmp_path):
    from nanochat_hf.training.sft_arguments import parse_chat_arguments

    argv = ["--sharded_optimizer", "adamw", "--adamw_matrix_lr", "1e-3", "--output_dir", str(tmp_path)]
    args, _, _ = parse_chat_arguments([*argv, "--use_cpu", "true", "--bf16", "false"])
    assert (args.sharded_optimizer, args.adamw_matrix_lr) == ("adamw", 1e-3)


def test_an_offloading_memory_mode_with_the_sharded_optimizer_is_refused(tmp_path, tokenizer_dir):
    args, training_args = parse_pretrain_arguments(
        tiny_pretrain_argv(tmp_path / "run", tokenizer_dir, max_steps=1, memory_mode="12gb", sharded_optimizer="muon")
    )
    with pytest.raises(UserInputError, match="sharded_optimizer muon cannot combine with an offloading memory mode"):
        run_pretraining(args, training_args)
    assert not (tmp_path / "run" / "final").exists()
