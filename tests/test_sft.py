"""Chat fine-tuning with trl's SFTTrainer on tiny models (CPU, float32): masks, packing, optimizer, output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from chat_helpers import Capture, chat_args, chat_tokenizer, save_tiny_model
from helpers import REMOTE_LOAD_SCRIPT
from trl import SFTConfig

from nanochat_hf import NanoChatHFForCausalLM
from nanochat_hf.chat.datasets import load_mixture
from nanochat_hf.errors import UserInputError
from nanochat_hf.optim import NanoChatMuonAdamW
from nanochat_hf.tokenizer import IGNORE_INDEX, render_conversation_with_mask
from nanochat_hf.training.sft import NanoChatSFTTrainer, run_sft
from nanochat_hf.training.sft_arguments import parse_chat_arguments


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny base model (nanochat's initialisation) with the chat tokenizer, as pretraining leaves it."""
    return save_tiny_model(tmp_path_factory.mktemp("sft") / "base", chat=False)


def test_full_sft_loss_falls_and_saves_a_hub_chat_model(tmp_path, base_dir):
    capture = Capture()
    final = run_sft(
        *chat_args(tmp_path / "run", base_dir, max_steps=24, logging_steps=4, init_lr_frac=1.0),
        extra_callbacks=[capture],
    )
    assert final == tmp_path / "run" / "final"
    assert capture.losses[-1] < capture.losses[0] - 1.0, capture.losses

    # nanochat's optimizer with the SFT schedule: constant momentum, LR x (1 - step/steps).
    optimizer = capture.first_step["optimizer"]
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    assert isinstance(optimizer, NanoChatMuonAdamW)
    muon = [g for g in optimizer.param_groups if g["kind"] == "muon"]
    assert all(g["momentum_warmup_steps"] == 0 and g["momentum_end"] == 0.95 for g in muon)
    lambdas = capture.first_step["scheduler"].lr_lambdas[0]
    assert [lambdas(step) for step in (0, 6, 12, 24)] == [1.0, 0.75, 0.5, 0.0]

    files = set(os.listdir(final))
    assert {
        "config.json",
        "model.safetensors",
        "modeling_nanochat_hf.py",
        "tokenizer.json",
        "tokenization_nanochat_hf.py",
        "generation_config.json",
        "README.md",
    } <= files
    tokenizer = chat_tokenizer()
    generation = json.loads((final / "generation_config.json").read_text())
    assert generation["eos_token_id"][0] == tokenizer.convert_tokens_to_ids("<|assistant_end|>")
    assert json.loads((final / "config.json").read_text())["eos_token_id"] == tokenizer.eos_token_id
    assert "assistant (nanochat's mask)" in (final / "README.md").read_text()
    # Loads where nanochat_hf is not installed, through the code saved next to the weights.
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD_SCRIPT, str(final)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HOME": str(tmp_path / "hf_home")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["module"].startswith("transformers_modules.")


def test_sft_stage_learning_rates_are_nanochats(tmp_path, base_dir):
    capture = Capture()
    run_sft(*chat_args(tmp_path / "run", base_dir, max_steps=1), extra_callbacks=[capture])
    scale = (64 / 768) ** -0.5  # AdamW LRs scale with the model width (d = 64)
    expected = {"muon": 0.02 * 0.02, "embedding": 0.2 * 0.02 * scale, "unembedding": 0.004 * 0.02 * scale}
    optimizer = getattr(capture.first_step["optimizer"], "optimizer", capture.first_step["optimizer"])
    for group, lr in zip(optimizer.param_groups, capture.first_step["lrs"], strict=True):
        key = "muon" if group["kind"] == "muon" else group["name"]
        assert lr == pytest.approx(expected[key])


def prepared_batch(tokenizer, model, dataset, **config):
    args = SFTConfig(
        output_dir="/tmp/unused",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        per_device_train_batch_size=4,
        **config,
    )
    trainer = NanoChatSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    return trainer, next(iter(trainer.get_train_dataloader()))


def segments(batch):
    """(input_ids, labels) of each conversation in a padding-free row (position_ids restart at 0)."""
    positions = batch["position_ids"][0].tolist()
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    return [(ids[a:b], labels[a:b]) for a, b in zip(starts, starts[1:], strict=False)]


def test_packed_labels_are_minus_100_exactly_where_nanochats_mask_is_0(base_dir):
    tokenizer = chat_tokenizer()
    model = NanoChatHFForCausalLM.from_pretrained(base_dir)
    from nanochat_hf.chat.synthetic import embedded_conversations

    conversations = embedded_conversations(40)
    masks = {}
    for conversation in conversations:
        ids, mask = render_conversation_with_mask(tokenizer, conversation, max_tokens=128)
        masks[tuple(ids)] = mask
    dataset = load_mixture(["embedded:40"], tokenizer, max_length=128)
    _, batch = prepared_batch(tokenizer, model, dataset, max_length=128, packing=True)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # padding-free
    parts = segments(batch)
    assert len(parts) > 4
    for ids, labels in parts:
        mask = masks[tuple(ids)]
        assert labels == [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]
        assert ids[0] == tokenizer.bos_token_id


def test_packed_conversations_do_not_attend_to_each_other(base_dir):
    """The padding-free row's loss equals the loss of its conversations run one by one."""
    from helpers import randomize_

    tokenizer = chat_tokenizer()
    model = randomize_(NanoChatHFForCausalLM.from_pretrained(base_dir), scale=0.2).eval()
    dataset = load_mixture(["embedded:24"], tokenizer, max_length=128)
    _, batch = prepared_batch(tokenizer, model, dataset, max_length=128, packing=True)
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k in ("input_ids", "labels", "position_ids")}).loss
        total, count = 0.0, 0
        for ids, labels in segments(batch):
            logits = model(torch.tensor([ids])).logits[0, :-1]
            targets = torch.tensor(labels[1:])
            total += F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum").item()
            count += int((targets != IGNORE_INDEX).sum())
    assert packed.item() == pytest.approx(total / count, rel=1e-5)


def test_loss_is_the_models_soft_capped_loss(base_dir):
    """trl's fused head would skip nanochat's soft-cap (config `softcap`, not `final_logit_softcapping`)."""
    from helpers import randomize_

    tokenizer = chat_tokenizer()
    model = randomize_(NanoChatHFForCausalLM.from_pretrained(base_dir), scale=1.0)  # large logits: the cap matters
    dataset = load_mixture(["embedded:8"], tokenizer, max_length=128)
    trainer, batch = prepared_batch(tokenizer, model, dataset, max_length=128, packing=True)
    loss = trainer.compute_loss(model, dict(batch))
    hidden = model.transformer(batch["input_ids"], position_ids=batch["position_ids"]).last_hidden_state
    logits = model.lm_head(hidden)[0, :-1].float()
    targets = batch["labels"][0, 1:]
    capped = F.cross_entropy(15 * torch.tanh(logits / 15), targets, ignore_index=IGNORE_INDEX)
    uncapped = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    assert loss.item() == pytest.approx(capped.item(), rel=1e-5)
    assert abs(uncapped.item() - capped.item()) > 0.1


def test_midtraining_trains_on_the_concatenated_stream(base_dir):
    tokenizer = chat_tokenizer()
    model = NanoChatHFForCausalLM.from_pretrained(base_dir)
    dataset = load_mixture(["embedded:24"], tokenizer, max_length=64, train_on_all_tokens=True)
    _, batch = prepared_batch(tokenizer, model, dataset, max_length=64, packing=True, packing_strategy="wrapped")
    assert batch["input_ids"].shape == (4, 64)  # rows cut from the stream of conversations, as nanochat does
    assert torch.equal(batch["labels"], batch["input_ids"])
    assert (batch["input_ids"] == tokenizer.bos_token_id).sum() > 4  # conversations start mid-row


def test_chunked_loss_gives_the_same_training(tmp_path, base_dir):
    if not hasattr(NanoChatHFForCausalLM.from_pretrained(base_dir), "loss_chunk_size"):
        pytest.skip("this model code has no chunked loss")
    whole, chunked = Capture(), Capture()
    run_sft(*chat_args(tmp_path / "whole", base_dir, max_steps=3), extra_callbacks=[whole])
    run_sft(*chat_args(tmp_path / "chunked", base_dir, max_steps=3, loss_chunk_size=16), extra_callbacks=[chunked])
    assert chunked.losses == pytest.approx(whole.losses, rel=1e-4)


def test_padding_free_without_packing(tmp_path, base_dir):
    final = run_sft(*chat_args(tmp_path / "run", base_dir, packing=False, padding_free=True, max_steps=2))
    assert (final / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(load_in_4bit=True), "add --use_peft true"),
        (dict(use_peft=True, optimizer="nanochat"), "--optimizer trainer"),
        (dict(max_length=4096), "beyond the model's sequence_len 256"),
        (dict(stage="rl"), "--stage 'rl'"),
        (dict(stage="mid", assistant_only_loss=True), "contradicts"),
        (dict(dataset_mixture="nonsense"), "unknown source"),
        (dict(model_name_or_path="/no/such/model"), "/no/such/model"),
        (dict(loss_chunk_size=0), "--loss_chunk_size"),
        (dict(report_to="tensorbored"), "--report_to tensorbored: not a reporting integration"),
    ],
)
def test_bad_settings_fail_before_training(tmp_path, base_dir, overrides, message):
    with pytest.raises(UserInputError, match=message):
        run_sft(*chat_args(tmp_path / "run", base_dir, **overrides))
    assert not (tmp_path / "run").exists()


def test_bad_conversation_fails_before_training(tmp_path, base_dir):
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps([{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]) + "\n")
    with pytest.raises(UserInputError, match="chats.jsonl' row 0: message 1: role 'user' where 'assistant'"):
        run_sft(*chat_args(tmp_path / "run", base_dir, dataset_mixture=str(chats)))
    assert not (tmp_path / "run").exists()


def test_tokenizer_without_the_nanochat_template_is_refused(tmp_path, base_dir):
    tokenizer = chat_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tokenizer.save_pretrained(tmp_path / "plain-template")
    with pytest.raises(UserInputError, match="chat template is not nanochat's"):
        run_sft(*chat_args(tmp_path / "run", base_dir, tokenizer_name_or_path=tmp_path / "plain-template"))
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path / "no-template")
    (tmp_path / "no-template" / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(UserInputError, match="has no chat template"):
        run_sft(*chat_args(tmp_path / "run", base_dir, tokenizer_name_or_path=tmp_path / "no-template"))


def test_existing_output_is_refused(tmp_path, base_dir):
    (tmp_path / "run" / "final").mkdir(parents=True)
    with pytest.raises(UserInputError, match="already exists"):
        run_sft(*chat_args(tmp_path / "run", base_dir))


def test_recipe_scripts_parse_the_shipped_configs():
    for name in (
        "midtrain_d32_8xh100",
        "sft_d32_8xh100",
        "sft_d32_lora_rtx4070",
        "sft_d32_qlora_rtx4070",
        "sft_cpu_quickstart",
    ):
        args, training_args, model_args = parse_chat_arguments(
            ["--config", str(REPO / "recipes" / "configs" / f"{name}.yaml"), "--use_cpu", "true"]
        )
        assert args.dataset_mixture and model_args.model_name_or_path
        assert (args.stage == "mid") == name.startswith("midtrain")
    _, training_args, model_args = parse_chat_arguments(
        ["--config", str(REPO / "recipes" / "configs" / "sft_d32_qlora_rtx4070.yaml"), "--use_cpu", "true"]
    )
    assert model_args.load_in_4bit and model_args.use_peft and model_args.bnb_4bit_quant_type == "nf4"


def test_recipe_script_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("sft_recipe", REPO / "recipes" / "sft.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    config = str(REPO / "recipes" / "configs" / "sft_cpu_quickstart.yaml")
    argv = [
        "--config",
        config,
        "--model_name_or_path",
        str(tmp_path / "missing"),
        "--output_dir",
        str(tmp_path / "run"),
    ]
    assert recipe.main(argv) == 2
    assert "missing" in capsys.readouterr().err


def test_midtrain_recipe_sets_the_mid_stage(tmp_path, base_dir, monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(REPO / "recipes"))
    spec = importlib.util.spec_from_file_location("midtrain_recipe", REPO / "recipes" / "midtrain.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    argv = ["--model_name_or_path", str(base_dir), "--dataset_mixture", "embedded:40", "--max_length", "64"]
    argv += ["--max_steps", "2", "--output_dir", str(tmp_path / "run"), "--use_cpu", "true", "--bf16", "false"]
    argv += [
        "--activation_checkpointing",
        "false",
        "--packing",
        "true",
        "--packing_strategy",
        "wrapped",
        "--report_to",
        "none",
    ]
    assert recipe.main(argv) == 0
    settings = json.loads((tmp_path / "run" / "final" / "run_settings.json").read_text())
    assert settings["stage"] == "mid" and settings["data"]["trained_tokens"] == "all"
    assert settings["optimizer"]["momentum_warmup_steps"] == 300 and settings["optimizer"]["init_lr_frac"] == 1.0


def test_lora_recipe_says_it_wrote_an_adapter_and_names_the_optimizer(tmp_path, base_dir, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("sft_recipe", REPO / "recipes" / "sft.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    argv = ["--model_name_or_path", str(base_dir), "--dataset_mixture", "embedded:40", "--max_length", "64"]
    argv += ["--max_steps", "2", "--output_dir", str(tmp_path / "run"), "--use_cpu", "true", "--bf16", "false"]
    argv += ["--use_peft", "true", "--optimizer", "trainer", "--optim", "adamw_torch", "--report_to", "none"]
    argv += ["--activation_checkpointing", "false", "--save_strategy", "no"]
    assert recipe.main(argv) == 0
    final = tmp_path / "run" / "final"
    assert (final / "adapter_config.json").is_file()
    printed = capsys.readouterr()
    assert f"LoRA adapter written to {final}" in printed.out and "chat model written" not in printed.out
    settings = json.loads((final / "run_settings.json").read_text())
    assert settings["optimizer"]["optim"] == "adamw_torch"
    assert "OptimizerNames" not in printed.out + printed.err
