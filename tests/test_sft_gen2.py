"""Chat SFT of a tiny generation-2 model: nanochat 2026's single stage (inherited settings, gen-2 optimizer, schedule)."""

import json
from pathlib import Path

import pytest
import torch
from chat_helpers import Capture, chat_args, save_tiny_model

from nanochat_hf import NanoChatHFForCausalLM
from nanochat_hf.chat.synthetic import embedded_conversations
from nanochat_hf.errors import UserInputError
from nanochat_hf.optim.muon_adamw_gen2 import NanoChatGen2MuonAdamW
from nanochat_hf.optim.scaling_gen2 import Gen2Settings
from nanochat_hf.optim.setup_gen2 import build_gen2_training
from nanochat_hf.training.sft import run_sft


REPO = Path(__file__).resolve().parents[1]
# What the (pretend) pretraining run recorded: other values than nanochat's fallbacks, so inheritance shows.
PRETRAINED_BATCH = {"micro_batch": 2, "tokens_per_step": 2 * 256 * 2, "processes": 1}
PRETRAINED_LRS = {"matrix_lr": 0.04, "embedding_lr": 0.6, "unembedding_lr": 0.016, "scalar_lr": 0.5, "smear_lr": 0.2}


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    """A pretraining run's folder: final/ (a tiny generation-2 base model with its run settings) and checkpoint-3/
    holding the optimizer state of that run (moments from three real updates of the generation-2 MuonAdamW)."""
    run = tmp_path_factory.mktemp("pretrain")
    base = save_tiny_model(run / "final", chat=False, generation=2)
    settings = {"batch": PRETRAINED_BATCH, "optimizer": {"unscaled_lrs": PRETRAINED_LRS}, "model": {"generation": 2}}
    (base / "run_settings.json").write_text(json.dumps(settings))
    model = NanoChatHFForCausalLM.from_pretrained(base)
    optimizer = build_gen2_training(model, Gen2Settings(num_iterations=3)).optimizer
    ids = torch.randint(0, model.config.vocab_size, (2, 32))
    for _ in range(3):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    (run / "checkpoint-3").mkdir()
    torch.save(optimizer.state_dict(), run / "checkpoint-3" / "optimizer.pt")
    return run


@pytest.fixture(scope="module")
def conversations_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "chats.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in embedded_conversations(240)))
    return path


def gen2_args(output_dir, base, conversations, **overrides):
    settings = {"dataset_mixture": str(conversations), "max_steps": -1, "num_train_epochs": 1, "logging_steps": 1}
    settings.update(overrides)
    args = chat_args(output_dir, base, **settings)
    args[1].max_length = 1024  # SFTConfig's default: generation 2 takes the model's sequence_len instead
    return args


def sft_multiplier(it: int, steps: int, warmdown: float = 0.5) -> float:
    progress = (it + 1) / steps
    return 1.0 if progress <= 1 - warmdown else 1 - (progress - (1 - warmdown)) / warmdown


def test_gen2_sft_trains_with_nanochat_2026_settings(tmp_path, pretrain_run, conversations_file):
    base = pretrain_run / "final"
    saved = torch.load(pretrain_run / "checkpoint-3" / "optimizer.pt", weights_only=True)
    capture = Capture()
    first_state = {}

    class FirstState(Capture):
        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            if not first_state:
                inner = getattr(optimizer, "optimizer", optimizer)
                for index, entry in inner.state_dict()["state"].items():  # copies: the update works in place
                    first_state[index] = {k: v.clone() if torch.is_tensor(v) else v for k, v in entry.items()}

    final = run_sft(*gen2_args(tmp_path / "run", base, conversations_file), extra_callbacks=[capture, FirstState()])
    assert capture.losses[-1] < capture.losses[0] - 0.5, capture.losses

    settings = json.loads((final / "run_settings.json").read_text())
    state = json.loads((final / "trainer_state.json").read_text())
    steps = state["max_steps"]
    assert steps == state["global_step"] > 4
    # Inherited from the pretraining run: rows per micro-step, tokens per update, row length, raw LRs.
    assert settings["batch"]["device_batch_size"] == PRETRAINED_BATCH["micro_batch"]
    assert settings["batch"]["total_batch_size"] == PRETRAINED_BATCH["tokens_per_step"]
    assert settings["data"]["max_length"] == 256
    assert settings["batch"]["gradient_accumulation_steps"] == PRETRAINED_BATCH["tokens_per_step"] // (2 * 256)
    opt = settings["optimizer"]
    assert opt["unscaled_lrs"]["matrix_lr"] == PRETRAINED_LRS["matrix_lr"]
    assert set(opt["lr_sources"].values()) == {"pretraining run"}
    # nanochat 2026 chat_sft.py: LR x 0.8, no batch scaling, AdamW x (d/768)^-0.5, schedule and momentum.
    s_d = (64 / 768) ** -0.5
    assert opt["init_lr_frac"] == 0.8
    assert opt["muon_lr"] == pytest.approx(PRETRAINED_LRS["matrix_lr"] * 0.8)
    assert opt["unembedding_lr"] == pytest.approx(PRETRAINED_LRS["unembedding_lr"] * s_d * 0.8)
    assert opt["embedding_lr"] == pytest.approx(PRETRAINED_LRS["embedding_lr"] * s_d * 0.8)
    assert opt["value_embeds_lr"] == pytest.approx(PRETRAINED_LRS["embedding_lr"] * s_d * 0.5 * 0.8)
    assert (opt["warmup_ratio"], opt["warmdown_ratio"], opt["final_lr_frac"]) == (0.0, 0.5, 0.0)
    assert opt["muon_weight_decay"] == 0.0 and opt["max_grad_norm"] == 0.0
    assert opt["warm_start"] == str(pretrain_run / "checkpoint-3" / "optimizer.pt")

    # The generation-2 optimizer was the one used, with those LRs, momentum schedule and LR schedule.
    optimizer = capture.first_step["optimizer"]
    optimizer = getattr(optimizer, "optimizer", optimizer)
    assert isinstance(optimizer, NanoChatGen2MuonAdamW)
    initial = {g["name"]: g["initial_lr"] for g in optimizer.param_groups}
    assert initial["unembedding"] == pytest.approx(opt["unembedding_lr"])
    muon = [g for g in optimizer.param_groups if g["kind"] == "muon"]
    assert muon and all(g["initial_lr"] == pytest.approx(opt["muon_lr"]) for g in muon)
    assert all(
        (g["momentum_start"], g["momentum_peak"], g["momentum_warmup_steps"], g["initial_weight_decay"])
        == (0.85, 0.95, 300, 0.0)
        for g in muon
    )
    lambdas = capture.first_step["scheduler"].lr_lambdas[0]
    assert [lambdas(it) for it in range(steps)] == pytest.approx([sft_multiplier(it, steps) for it in range(steps)])
    assert lambdas(steps - 1) == 0.0

    # Warm start: the first update began from the pretraining optimizer's moments.
    for index, entry in saved["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value) and value.dim() > 0:
                assert torch.equal(first_state[index][key], value), (index, key)


def test_gen2_default_mixture_and_load_optimizer_none(tmp_path, pretrain_run):
    from nanochat_hf.training.sft_gen2 import nanochat_2026_mixture, settle_gen2_arguments

    args = chat_args(tmp_path / "run", pretrain_run / "final", dataset_mixture=None)[0]
    args.explicit_fields = args.explicit_fields - {"dataset_mixture"}
    settle_gen2_arguments(args, str(pretrain_run / "final"))
    assert args.dataset_mixture == ["smoltalk:train", "mmlu:train*3", "gsm8k:train*4"]
    assert nanochat_2026_mixture(1, 0) == ["smoltalk:train", "mmlu:train*1"]


def test_gen2_fresh_optimizer_when_asked(tmp_path, pretrain_run, conversations_file):
    final = run_sft(
        *gen2_args(tmp_path / "run", pretrain_run / "final", conversations_file, load_optimizer="none", max_steps=1)
    )
    assert json.loads((final / "run_settings.json").read_text())["optimizer"]["warm_start"] is None


@pytest.mark.parametrize(
    ("generation", "overrides", "message"),
    [
        (1, {"mmlu_epochs": 3}, "--mmlu_epochs"),
        (1, {"total_batch_size": 1024}, "generation-1 model"),
        (2, {"stage": "mid"}, "--stage 'mid'"),
        (2, {"sharded_optimizer": "muon"}, "--sharded_optimizer muon"),
        (2, {"total_batch_size": 1000}, "--total_batch_size 1,000 must be a multiple"),
        (2, {"load_optimizer": "/nonexistent"}, "--load_optimizer /nonexistent"),
        (2, {"gsm8k_epochs": 2}, "--mmlu_epochs/--gsm8k_epochs"),
    ],
)
def test_other_generations_settings_are_refused(
    tmp_path, pretrain_run, conversations_file, generation, overrides, message
):
    base = pretrain_run / "final"
    if generation == 1:
        base = save_tiny_model(tmp_path / "gen1", chat=False)
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace("*", r"\*")) as caught:
        run_sft(*gen2_args(tmp_path / "run", base, conversations_file, **overrides))
    assert not (tmp_path / "run").exists(), caught.value


@pytest.mark.parametrize("name", ["sft_gpt2_8xh100", "sft_gpt2_cpu_quickstart"])
def test_generation2_configs_are_nanochat_2026_settings(name):
    from nanochat_hf.training.sft_arguments import parse_chat_arguments
    from nanochat_hf.training.sft_gen2 import check_generation_fields

    config = str(REPO / "recipes" / "configs" / f"{name}.yaml")
    args, training_args, _ = parse_chat_arguments(["--config", config, "--use_cpu", "true", "--bf16", "false"])
    check_generation_fields(args, 2, name)
    # nothing of nanochat 2026's schedule or inherited batch is overridden; one pass over the mixture
    assert not args.explicit_fields & {"init_lr_frac", "warmdown_ratio", "matrix_lr", "total_batch_size"}
    assert (training_args.max_steps, training_args.num_train_epochs, training_args.packing) == (-1, 1, True)


def test_cpu_quickstart_config_trains_a_generation2_model(tmp_path, pretrain_run):
    from nanochat_hf.training.sft_arguments import parse_chat_arguments

    config = str(REPO / "recipes" / "configs" / "sft_gpt2_cpu_quickstart.yaml")
    overrides = ["--model_name_or_path", str(pretrain_run / "final"), "--output_dir", str(tmp_path / "run")]
    final = run_sft(
        *parse_chat_arguments(["--config", config, *overrides, "--max_steps", "2", "--disable_tqdm", "true"])
    )
    settings = json.loads((final / "run_settings.json").read_text())
    assert settings["model"]["generation"] == 2 and settings["optimizer"]["init_lr_frac"] == 0.8


def test_gen2_lora_trains_adapters_only_and_merges_back(tmp_path, pretrain_run, conversations_file):
    from peft import PeftModel

    base = pretrain_run / "final"
    lora = dict(use_peft=True, lora_r=4, lora_alpha=8, optimizer="trainer", optim="adamw_torch", learning_rate=1e-2)
    capture = Capture()
    final = run_sft(
        *gen2_args(tmp_path / "run", base, conversations_file, max_steps=4, **lora), extra_callbacks=[capture]
    )
    assert (final / "adapter_config.json").is_file() and not (final / "model.safetensors").exists()
    settings = json.loads((final / "run_settings.json").read_text())
    assert settings["method"] == "lora" and settings["optimizer"]["optim"] == "adamw_torch"
    assert len(capture.losses) == 4
    # The tiny base is untrained (lm_head ~ N(0, 0.001): uniform predictions), so its loss hardly moves; the
    # adapters did train: peft initialises every lora_B to zero, and the saved ones are not.
    from safetensors.torch import load_file

    adapter = load_file(final / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and all(tensor.abs().max() > 0 for tensor in lora_b)
    assert any(".attn.c_q." in name for name in adapter) and any(".mlp.c_fc." in name for name in adapter)
    # Only adapter matrices trained; merged into the generation-2 base, they change its outputs.
    plain = NanoChatHFForCausalLM.from_pretrained(base)
    adapted = PeftModel.from_pretrained(NanoChatHFForCausalLM.from_pretrained(base), final).merge_and_unload()
    assert adapted.config.generation == 2
    ids = torch.randint(0, plain.config.vocab_size, (1, 16))
    assert not torch.allclose(adapted(input_ids=ids).logits, plain(input_ids=ids).logits)
