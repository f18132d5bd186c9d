"""The pretraining callbacks, each in a tiny real Trainer run on CPU (nanochat_hf.callbacks)."""

import json
import math
import time

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Trainer, TrainerCallback, TrainingArguments, default_data_collator

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.callbacks import (
    EnergyCallback,
    SampleCallback,
    ThroughputCallback,
    ValBpbCallback,
    add_metric_callbacks,
    greedy_completions,
)
from nanochat_hf.callbacks.val_bpb import evaluate_bpb
from nanochat_hf.data import build_pretrain_datasets
from nanochat_hf.planning.gpus import get_gpu, unlisted_gpu
from nanochat_hf.tokenizer.token_bytes import compute_token_bytes


SEQ = 16
MICRO_BATCH = 2
WORDS = "the cat sat on a mat and saw one dog run far away from its red house near old trees".split()


def make_documents(count):
    return [" ".join(WORDS[(i * 3 + j * 7) % len(WORDS)] for j in range(i % 17 + 4)) + "." for i in range(count)]


@pytest.fixture(scope="module")
def tokenizer():
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(make_documents(200), trainer)
    backend.add_special_tokens(["<|bos|>"])  # after the mergeable tokens, as in nanochat
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|bos|>")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in make_documents(120)))
    return path


def tiny_model(tokenizer):
    torch.manual_seed(0)
    config = NanoChatHFConfig(n_layer=2, n_embd=32, n_head=2, n_kv_head=2, vocab_size=len(tokenizer), sequence_len=SEQ)
    return NanoChatHFForCausalLM(config)


class Recorder(TrainerCallback):
    """Added the ordinary way (after the printer and integrations): sees what reporters would see."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append({**logs, "step": state.global_step})


def run_trainer(
    tmp_path,
    tokenizer,
    corpus,
    metric_callbacks=(),
    max_steps=4,
    logging_steps=2,
    grad_accum=1,
    report_to="none",
    **extra,
):
    train, validation = build_pretrain_datasets(corpus, tokenizer, SEQ, num_lanes=2)
    model = tiny_model(tokenizer)
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=max_steps,
        per_device_train_batch_size=MICRO_BATCH,
        gradient_accumulation_steps=grad_accum,
        learning_rate=3e-3,
        logging_steps=logging_steps,
        save_strategy="no",
        report_to=report_to,
        use_cpu=True,
        remove_unused_columns=False,  # keep `shift_labels`
        disable_tqdm=True,
        seed=0,
        **extra,
    )
    recorder = Recorder()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=default_data_collator,
        processing_class=tokenizer,
        callbacks=[recorder],
    )
    add_metric_callbacks(trainer, *metric_callbacks)
    started = time.perf_counter()
    trainer.train()
    return trainer, recorder, validation, time.perf_counter() - started


def logged(recorder, key):
    return [(entry["step"], entry[key]) for entry in recorder.logs if key in entry]


def test_throughput_tokens_per_second_and_eta_without_mfu_on_cpu(tmp_path, tokenizer, corpus):
    trainer, recorder, _, _ = run_trainer(tmp_path, tokenizer, corpus, [ThroughputCallback()])
    tokens_per_step = MICRO_BATCH * 1 * 1 * SEQ
    assert [step for step, _ in logged(recorder, "tokens_per_second")] == [2, 4]
    for entry in recorder.logs:
        if "tokens_per_second" in entry:
            assert entry["tokens_per_second"] > 0 and entry["step_seconds"] > 0
            # Rate and step time describe the same steps.
            assert entry["tokens_per_second"] == pytest.approx(tokens_per_step / entry["step_seconds"])
            assert entry["tokens"] == entry["step"] * tokens_per_step
            assert entry["eta_seconds"] >= 0
    assert logged(recorder, "eta_seconds")[-1][1] == 0  # nothing left after the last step
    assert not logged(recorder, "mfu_percent")  # no known peak on CPU: absent, not a made-up number
    assert "tokens_per_second" in trainer.state.log_history[0]  # also kept in trainer_state.json


def test_throughput_mfu_against_the_table_peak(tmp_path, tokenizer, corpus):
    _, recorder, _, _ = run_trainer(tmp_path, tokenizer, corpus, [ThroughputCallback(gpu="rtx4070")])
    model = tiny_model(tokenizer)
    config = model.config
    # nanochat generation 1: 6 * (N - N_wte) + 12 * L * n_head * head_dim * T
    n_total = sum(p.numel() for p in model.parameters())
    n_wte = model.get_input_embeddings().weight.numel()
    flops_per_token = 6 * (n_total - n_wte) + 12 * config.n_layer * config.n_head * config.head_dim * SEQ
    entries = [entry for entry in recorder.logs if "mfu_percent" in entry]
    assert len(entries) == 2
    for entry in entries:
        expected = 100 * flops_per_token * entry["tokens_per_second"] / (58.3e12)  # RTX 4070 dense BF16 peak
        assert entry["mfu_percent"] == pytest.approx(expected)


def test_a_card_the_table_does_not_list_gets_no_mfu_and_no_table_energy(tmp_path, tokenizer, corpus):
    card = unlisted_gpu("NVIDIA GeForce RTX 4070 Ti", 12 * 2**30, (8, 9))  # what resolve_gpu() reports for it
    callbacks = [ThroughputCallback(gpu=card), EnergyCallback(price_per_kwh=0.3, gpu=card, use_nvml=False)]
    _, recorder, _, _ = run_trainer(tmp_path, tokenizer, corpus, callbacks)
    assert logged(recorder, "tokens_per_second")
    assert not logged(recorder, "mfu_percent") and not logged(recorder, "energy_kwh")


def test_val_bpb_equals_a_direct_computation(tmp_path, tokenizer, corpus):
    token_bytes = compute_token_bytes(tokenizer)
    _, validation = build_pretrain_datasets(corpus, tokenizer, SEQ, num_lanes=2)
    eval_rows = 6  # one batch of 4 and a partial one of 2
    callback = ValBpbCallback(validation, token_bytes, eval_every=2, eval_tokens=eval_rows * SEQ, batch_size=4)
    trainer, recorder, _, _ = run_trainer(tmp_path, tokenizer, corpus, [callback], max_steps=4, logging_steps=3)
    values = logged(recorder, "val_bpb")
    assert [step for step, _ in values] == [2, 4]  # evaluated off the logging grid too
    assert values[1][1] < values[0][1]  # it learns

    # Directly, on the final model: CE in nats over targets that are not special tokens, divided by
    # ln 2 x the UTF-8 length of the text those targets spell.
    model = trainer.model.eval()
    rows = [row for _, row in zip(range(eval_rows), iter(validation), strict=False)]
    input_ids = torch.stack([r["input_ids"] for r in rows])
    targets = torch.stack([r["shift_labels"] for r in rows])
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits
    nats = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    counted = targets.flatten() != tokenizer.bos_token_id
    text_bytes = sum(
        len(tokenizer.decode([t for t in row.tolist() if t != tokenizer.bos_token_id]).encode("utf-8"))
        for row in targets
    )
    expected = nats[counted].sum().item() / (math.log(2) * text_bytes)
    assert values[1][1] == pytest.approx(expected, rel=1e-5)


def test_validation_shows_progress_only_when_asked(tokenizer, corpus, capsys):
    _, validation = build_pretrain_datasets(corpus, tokenizer, SEQ, num_lanes=2)
    model, token_bytes = tiny_model(tokenizer), compute_token_bytes(tokenizer)
    quiet = evaluate_bpb(model, validation, token_bytes, eval_tokens=8 * SEQ, batch_size=2)
    assert "val bpb" not in capsys.readouterr().err
    shown = evaluate_bpb(model, validation, token_bytes, eval_tokens=8 * SEQ, batch_size=2, show_progress=True)
    err = capsys.readouterr().err
    assert "val bpb" in err and "/4 [" in err  # of 4 batches: 8 rows in batches of 2
    assert shown == quiet


def test_samples_are_the_models_greedy_continuations(tmp_path, tokenizer, corpus, capsys, monkeypatch):
    prompts = ["the cat sat", "a dog"]
    callback = SampleCallback(prompts=prompts, sample_every=3, max_new_tokens=5)
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    trainer, recorder, _, _ = run_trainer(
        tmp_path, tokenizer, corpus, [callback], max_steps=4, report_to="tensorboard"
    )
    assert [step for step, _ in callback.history] == [3, 4]
    # Not in the Trainer's logs: the console printer would cut it to "[String too long to display ...]".
    assert not logged(recorder, "samples")
    model = trainer.model.eval()
    final_step, completions = callback.history[-1]
    assert final_step == 4
    for prompt, completion in zip(prompts, completions, strict=True):
        ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        sequence = list(ids)
        with torch.no_grad():
            for _ in range(5):  # greedy decoding by hand, without generate(), up to the next BOS
                logits = model(input_ids=torch.tensor([sequence])).logits
                token = int(logits[0, -1].argmax())
                if token == tokenizer.bos_token_id:
                    break
                sequence.append(token)
        assert completion == tokenizer.decode(sequence[len(ids) :])
        assert "<|bos|>" not in completion
    printed = capsys.readouterr().out
    assert "--- samples at step 4 (greedy; prompt | continuation) ---" in printed
    block = printed.split("--- samples at step 4")[1].splitlines()[1:3]
    assert block == [f"  {n}. {p} |{c}" for n, (p, c) in enumerate(zip(prompts, completions, strict=True), 1)]
    # TensorBoard received them as a Markdown table under Text, one per sampling step.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    texts = events.Tensors("samples/text_summary")
    assert [event.step for event in texts] == [3, 4]
    table = texts[-1].tensor_proto.string_val[0].decode()
    assert table.splitlines()[0] == "| step | prompt | completion |"
    assert table.splitlines()[2] == "| 4 | the cat sat | " + samples_markdown_cell(completions[0]) + " |"


def samples_markdown_cell(text):
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def test_a_completion_stops_at_bos(tokenizer):
    """A model that always predicts BOS after the prompt gives an empty completion, not '<|bos|>...'."""
    model = tiny_model(tokenizer).eval()
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[tokenizer.bos_token_id] = 1.0
    assert greedy_completions(model, tokenizer, ["the cat"], max_new_tokens=4) == [""]


def test_energy_is_table_power_times_time_and_costs_the_price(tmp_path, tokenizer, corpus):
    callback = EnergyCallback(price_per_kwh=0.3, currency="EUR", gpu="rtx4070", use_nvml=False)
    _, recorder, _, wall_seconds = run_trainer(tmp_path, tokenizer, corpus, [callback])
    watts = get_gpu("rtx4070").board_power_w
    assert watts == 200  # the RTX 4070's board power (200 W TGP)
    energies = [(entry["step"], entry["energy_kwh"]) for entry in recorder.logs if "loss" in entry]
    assert len(energies) == 2 and 0 < energies[0][1] < energies[1][1]
    assert energies[-1][1] <= watts * wall_seconds / 3.6e6
    for entry in recorder.logs:
        if "energy_kwh" in entry:
            assert entry["energy_cost_eur"] == pytest.approx(entry["energy_kwh"] * 0.3)


def test_energy_is_absent_on_cpu_without_a_power_figure(tmp_path, tokenizer, corpus):
    _, recorder, _, _ = run_trainer(tmp_path, tokenizer, corpus, [EnergyCallback(price_per_kwh=0.3)])
    assert not logged(recorder, "energy_kwh")
