"""The generation-2 (2026) pretraining recipe through the Trainer: plan, optimizer, schedule, data, resume, DDP."""

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import KillAtStep, launch_pretraining_on_two_processes, tiny_pretrain_argv
from transformers import TrainerCallback

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.errors import UserInputError
from nanochat_hf.optim import build_optimizer
from nanochat_hf.optim.muon_adamw_gen2 import NanoChatGen2MuonAdamW
from nanochat_hf.optim.setup_gen2 import build_gen2_training
from nanochat_hf.training import parse_pretrain_arguments, run_pretraining


REPO = Path(__file__).resolve().parents[1]
GEN2 = dict(generation=2, lr_warmup_steps=2, matrix_lr=0.16, embedding_lr=2.4, unembedding_lr=0.064, scalar_lr=2.0)


def gen2_argv(output_dir, tokenizer_dir, **overrides):
    return tiny_pretrain_argv(output_dir, tokenizer_dir, **{**GEN2, **overrides})


def run(argv, callbacks=()):
    args, training_args = parse_pretrain_arguments(argv)
    return run_pretraining(args, training_args, extra_callbacks=list(callbacks))


def log_history(output_dir) -> list[dict]:
    return json.loads((Path(output_dir) / "final" / "trainer_state.json").read_text())["log_history"]


def losses(output_dir) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in log_history(output_dir) if "loss" in e}


class Inspect(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        self.optimizer, self.max_grad_norm = optimizer, args.max_grad_norm
        self.lrs = []

    def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
        self.lrs.append(lr_scheduler.get_last_lr()[0])


def test_the_speedrun_dry_run_prints_nanochats_d24_plan(capsys):
    argv = ["--config", str(REPO / "recipes" / "configs" / "pretrain_gpt2_8xh100.yaml"), "--dry_run", "true"]
    assert run(argv) is None
    out = capsys.readouterr().out
    for expected in (
        "generation                   2",
        "parameters                   1,384,122,122",
        "flops_per_token              4,775,225,616",
        "total_flops                  2.7880e+19",
        "FLOPs: 4,775,225,616 per token, 2.7880e+19 in all",
        "tokens_per_step              1,048,576",
        "steps                        5,568",
        "total_tokens                 5,838,471,168",
        "tokens_per_scaling_parameter 8.0",
        "scaling params (matrices + lm_head): 729,810,624   d12 reference: 110,100,912",
        "batch LR scale: 1.414214",
        "Muon weight decay: 0.059738 (cosine to 0)   gradient clipping: none",
        "value_embeds     adamw  12 tensors     603,979,776 params  lr 0.15",
        "muon_1536x1536   muon   96 tensors     226,492,416 params  lr 0.0282843",
        "packing                      best_fit",
        "dataset                      karpathy/climbmix-400b-shuffle",
    ):
        assert expected in out, expected


def test_cpu_run_trains_with_the_generation2_optimizer_and_schedule(tmp_path, tokenizer_dir):
    inspect = Inspect()
    argv = gen2_argv(tmp_path / "run", tokenizer_dir, max_steps=30, eval_every=15, eval_tokens=2048)
    final = run(argv, callbacks=[inspect])
    assert isinstance(inspect.optimizer.optimizer, NanoChatGen2MuonAdamW) and inspect.max_grad_norm == 0.0
    # LR: warm-up over 2 updates, constant, warm-down over the last 65 % to 0.05 of the peak.
    peak = max(inspect.lrs)
    assert inspect.lrs[0] == pytest.approx(peak)  # after update 1 the schedule is at (1+1)/2 of warm-up
    assert inspect.lrs[-1] < 0.1 * peak  # the last update runs at ~0.05 of the peak
    history = log_history(tmp_path / "run")
    bpbs = [e["val_bpb"] for e in history if "val_bpb" in e]
    assert len(bpbs) == 2 and bpbs[1] < bpbs[0]
    train = [e["loss"] for e in history if "loss" in e]
    assert train[-1] < train[0] - 0.5
    settings = json.loads((final / "run_settings.json").read_text())
    assert settings["model"]["generation"] == 2 and settings["data"]["packing"] == "best_fit"
    model = NanoChatHFForCausalLM.from_pretrained(final)
    assert model.config.generation == 2 and model.config.value_embeddings


def test_kill_and_resume_reproduces_the_uninterrupted_losses(tmp_path, tokenizer_dir):
    common = dict(max_steps=6, save_strategy="steps", save_steps=3)
    run(gen2_argv(tmp_path / "straight", tokenizer_dir, **common))
    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run(gen2_argv(interrupted, tokenizer_dir, **common), callbacks=[KillAtStep(4)])
    run(gen2_argv(interrupted, tokenizer_dir, resume_from_checkpoint="last", **common))
    straight, resumed = losses(tmp_path / "straight"), losses(interrupted)
    assert set(resumed) == set(range(1, 7))
    for step in resumed:
        assert resumed[step] == pytest.approx(straight[step], abs=1e-5), step


def test_two_processes_equal_one_process_with_double_accumulation(tmp_path, tokenizer_dir):
    common = dict(max_steps=3, per_device_train_batch_size=8)
    run(gen2_argv(tmp_path / "one", tokenizer_dir, **common))  # accumulation 4
    # accumulation 2 on each of 2 processes
    launch_pretraining_on_two_processes(gen2_argv(tmp_path / "two", tokenizer_dir, **common), timeout=600)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert one.keys() == two.keys() == {1, 2, 3}
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-4), step


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(generation=1), "--scalar_lr, --lr_warmup_steps: generation 2 settings; this run is generation 1"),
        (dict(generation=3), "--generation must be 1 or 2"),
        (
            dict(memory_mode="8gb"),
            "memory mode .8gb. is not available for generation 2; it has auto, full, 24gb, 12gb",
        ),
        (dict(muon_momentum="8bit"), "8-bit optimizer state .* generation 1 only"),
        (dict(warmup_ratio=0.1), "--warmup_ratio is generation 1's warm-up"),
        (dict(target_tokens=1000), "--target_tokens is generation 1's"),
        (dict(max_steps=-1, target_param_data_ratio=1e-9), "gives no tokens|0 updates"),
        (dict(window_pattern="SSL"), "--window_pattern 'SSL' has 3 letters for a 2-layer model"),
        (dict(window_pattern="SX"), "window_pattern"),
    ],
)
def test_bad_generation2_settings_fail_before_training(tmp_path, tokenizer_dir, overrides, message):
    with pytest.raises((UserInputError, ValueError), match=message):
        run(gen2_argv(tmp_path / "run", tokenizer_dir, **overrides))
    assert not (tmp_path / "run" / "final").exists()


def test_fp8_on_the_cpu_is_refused_before_any_work(tmp_path, tokenizer_dir):
    with pytest.raises(UserInputError, match=r"^--fp8 needs a CUDA GPU with compute capability >= 8\.9.*on the CPU"):
        run(gen2_argv(tmp_path / "run", tokenizer_dir, fp8="true"))
    assert not (tmp_path / "run").exists()  # no folder, no model, no data opened


@pytest.mark.gpu
def test_fp8_recipe_run_on_an_fp8_gpu(tmp_path, tokenizer_dir):
    """The recipe on compute capability >= 8.9: FP8 training with validation and samples (in bf16) between."""
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("no FP8 tensor cores on this GPU")
    pytest.importorskip("torchao")
    settings = dict(fp8="true", use_cpu="false", bf16="true", max_steps=6, eval_every=3, eval_tokens=1024)
    run(gen2_argv(tmp_path / "run", tokenizer_dir, sample_every=3, **settings))
    steps = losses(tmp_path / "run")
    assert len(steps) == 6 and all(math.isfinite(loss) for loss in steps.values())
    assert [e["step"] for e in log_history(tmp_path / "run") if "val_bpb" in e] == [3, 6]


def test_continuing_a_model_of_the_other_generation_is_refused(tmp_path, tokenizer_dir):
    run(tiny_pretrain_argv(tmp_path / "gen1", tokenizer_dir, max_steps=1))
    with pytest.raises(UserInputError, match="is a generation-1 model; set --generation 1"):
        run(gen2_argv(tmp_path / "more", tokenizer_dir, model_name_or_path=str(tmp_path / "gen1" / "final")))


def test_each_generations_optimizer_refuses_the_other_generations_model():
    gen1 = NanoChatHFForCausalLM(NanoChatHFConfig.from_depth(2, vocab_size=512, sequence_len=32))
    gen2 = NanoChatHFForCausalLM(NanoChatHFConfig.from_depth(2, vocab_size=512, sequence_len=32, generation=2))
    with pytest.raises(UserInputError, match="generation"):
        build_gen2_training(gen1)
    with pytest.raises(
        UserInputError, match="is a generation-2 nanochat .* use nanochat_hf.optim.build_gen2_optimizer"
    ):
        build_optimizer(gen2)
