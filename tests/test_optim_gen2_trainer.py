"""The generation-2 optimizer and schedule inside transformers' Trainer: built by the factory, checkpointed,
resumed bit-identically (weights, optimizer state, Muon schedules, LR)."""

import pytest
import torch
from gen2_fixtures import Gen2ShapedStandIn, randomize
from transformers import Trainer, TrainingArguments, default_data_collator

from nanochat_hf.optim import NanoChatGen2MuonAdamW, NanoChatGen2MuonAdamWFactory, get_gen2_schedule


pytestmark = pytest.mark.usefixtures("one_cpu_thread")

STEPS, SAVE_AT = 6, 3


class Gen2ScheduleTrainer(Trainer):
    """The Trainer with generation 2's LR schedule (what the package's trainers do in create_scheduler)."""

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = get_gen2_schedule(optimizer or self.optimizer, num_training_steps, warmup_steps=2)
        return self.lr_scheduler


def rows(count=32, length=16):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (count, length), generator=generator)
    return [{"input_ids": row, "labels": row} for row in ids]


def make_trainer(output_dir, **overrides):
    settings = dict(
        output_dir=str(output_dir),
        max_steps=STEPS,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_grad_norm=0.0,  # generation 2 does not clip
        save_steps=SAVE_AT,
        save_strategy="steps",
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    args = TrainingArguments(**{**settings, **overrides})
    model = randomize(Gen2ShapedStandIn(extras_under_transformer=True), seed=0, scale=0.05)
    return Gen2ScheduleTrainer(
        model=model,
        args=args,
        train_dataset=rows(),
        data_collator=default_data_collator,
        optimizer_cls_and_kwargs=(NanoChatGen2MuonAdamWFactory, {"weight_decay": 0.2, "num_iterations": 100}),
    )


def test_trainer_trains_and_resumes_bit_identically(tmp_path):
    straight = make_trainer(tmp_path / "straight")
    straight.train()
    optimizer = straight.optimizer.optimizer  # accelerate's AcceleratedOptimizer wraps ours
    assert isinstance(optimizer, NanoChatGen2MuonAdamW)
    muon = optimizer.param_groups[0]
    assert muon["kind"] == "muon" and muon["step"] == STEPS
    assert muon["num_iterations"] == STEPS  # the scheduler's horizon, not the factory's 100
    losses = [entry["loss"] for entry in straight.state.log_history if "loss" in entry]
    assert len(losses) == STEPS and losses[-1] < losses[0]

    resumed = make_trainer(tmp_path / "resumed", save_strategy="no")
    resumed.train(resume_from_checkpoint=str(tmp_path / "straight" / f"checkpoint-{SAVE_AT}"))
    resumed_losses = [entry["loss"] for entry in resumed.state.log_history if "loss" in entry]
    assert resumed_losses[-(STEPS - SAVE_AT) :] == losses[SAVE_AT:]
    for (name, param), expected in zip(
        resumed.model.named_parameters(), straight.model.named_parameters(), strict=True
    ):
        assert torch.equal(param, expected[1]), name
    assert resumed.optimizer.optimizer.param_groups[0]["step"] == STEPS
