"""`NanoChatPretrainer` on its own (nanochat_hf.training.pretrain_trainer): the data position it saves
into every checkpoint, on every rank, and an exact resume from it."""

import pytest
import torch
from transformers import AutoTokenizer, TrainerCallback

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.data import PretrainDataset, build_pretrain_datasets, load_data_state
from nanochat_hf.errors import UserInputError
from nanochat_hf.training import NanoChatPretrainer, PretrainTrainingArguments


pytestmark = pytest.mark.usefixtures("one_cpu_thread")

SEQ = 16
MICRO_BATCH = 2


class Losses(TrainerCallback):
    def __init__(self):
        self.by_step = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in logs:
            self.by_step[state.global_step] = logs["loss"]


def tiny_model(tokenizer):
    torch.manual_seed(0)
    config = NanoChatHFConfig(n_layer=2, n_embd=32, n_head=2, n_kv_head=2, vocab_size=len(tokenizer), sequence_len=SEQ)
    return NanoChatHFForCausalLM(config)


def training_args(output_dir, **overrides):
    settings = dict(
        output_dir=str(output_dir),
        max_steps=4,
        per_device_train_batch_size=MICRO_BATCH,
        gradient_accumulation_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=0,
        ignore_data_skip=True,  # the data position is restored directly, not by replaying batches
    )
    return PretrainTrainingArguments(**{**settings, **overrides})


def pretrainer(tokenizer, dataset, args, *callbacks):
    return NanoChatPretrainer(
        model=tiny_model(tokenizer),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )


def test_checkpoints_hold_the_data_position_and_resume_exactly(tmp_path, tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    uninterrupted = Losses()
    train, _ = build_pretrain_datasets("embedded", tokenizer, SEQ, num_lanes=2)
    pretrainer(tokenizer, train, training_args(tmp_path / "a"), uninterrupted).train()

    # Same run, checkpointing at step 2 with the data position of every rank.
    train, _ = build_pretrain_datasets("embedded", tokenizer, SEQ, num_lanes=2)
    first_run = tmp_path / "b"
    pretrainer(tokenizer, train, training_args(first_run, save_strategy="steps", save_steps=2)).train()
    checkpoint = first_run / "checkpoint-2"
    assert (checkpoint / "data_state_rank0.json").is_file()

    # The saved position is the first row the trainer had not consumed (2 steps x 2 x 2 rows),
    # even though the dataloader had prefetched further.
    fresh = PretrainDataset("embedded", tokenizer, SEQ, num_lanes=2)
    restored = PretrainDataset("embedded", tokenizer, SEQ, num_lanes=2)
    load_data_state(restored, checkpoint)
    expected_rows = [row for _, row in zip(range(10), iter(fresh), strict=False)][8:]
    got_rows = [row for _, row in zip(range(2), iter(restored), strict=False)]
    for expected, got in zip(expected_rows, got_rows, strict=True):
        assert torch.equal(expected["input_ids"], got["input_ids"])

    # Restoring the data but letting the Trainer also skip batches would skip them twice.
    replaying = pretrainer(tokenizer, restored, training_args(first_run, ignore_data_skip=False))
    with pytest.raises(ValueError, match="ignore_data_skip") as error:
        replaying.train(resume_from_checkpoint=str(checkpoint))
    assert isinstance(error.value, UserInputError)

    # Resume from the checkpoint: steps 3 and 4 give the uninterrupted run's losses.
    resumed_data = PretrainDataset("embedded", tokenizer, SEQ, num_lanes=2)
    load_data_state(resumed_data, checkpoint)
    resumed = Losses()
    pretrainer(tokenizer, resumed_data, training_args(first_run), resumed).train(
        resume_from_checkpoint=str(checkpoint)
    )
    assert sorted(resumed.by_step) == [3, 4]
    for step in (3, 4):
        assert resumed.by_step[step] == pytest.approx(uninterrupted.by_step[step], abs=1e-5)
