"""The pretraining recipe end to end on CPU: tiny models, the embedded corpus, real Trainer runs."""

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REMOTE_LOAD_SCRIPT, KillAtStep, launch_pretraining_on_two_processes, tiny_pretrain_argv
from transformers import TrainerCallback

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.cli import main as cli_main
from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.flops import ModelShape, flops_per_token
from nanochat_hf.training import NonFiniteLossError, parse_pretrain_arguments, run_pretraining
from nanochat_hf.training.checkpoints import last_good_checkpoint, resolve_resume_checkpoint


REPO = Path(__file__).resolve().parents[1]


def tiny_args(output_dir, tokenizer_dir, **overrides):
    return tiny_pretrain_argv(output_dir, tokenizer_dir, **overrides)


def run(argv, callbacks=()):
    args, training_args = parse_pretrain_arguments(argv)
    return run_pretraining(args, training_args, extra_callbacks=list(callbacks))


def losses(output_dir) -> dict[int, float]:
    state = json.loads((Path(output_dir) / "final" / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def test_loss_decreases_and_metrics_are_logged(tmp_path, tokenizer_dir):
    run(tiny_args(tmp_path / "run", tokenizer_dir, max_steps=30, logging_steps=5, eval_every=15, eval_tokens=2048))
    state = json.loads((tmp_path / "run" / "final" / "trainer_state.json").read_text())
    train_losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert train_losses[-1] < train_losses[0] - 0.5
    bpbs = [e["val_bpb"] for e in state["log_history"] if "val_bpb" in e]
    assert len(bpbs) == 2 and bpbs[1] < bpbs[0]
    assert any("tokens_per_second" in e for e in state["log_history"])


def test_micro_batch_times_accumulation_is_what_counts(tmp_path, tokenizer_dir):
    run(tiny_args(tmp_path / "mb16", tokenizer_dir, per_device_train_batch_size=16))  # accumulation 2
    run(tiny_args(tmp_path / "mb32", tokenizer_dir, per_device_train_batch_size=32))  # accumulation 1
    a, b = losses(tmp_path / "mb16"), losses(tmp_path / "mb32")
    assert a.keys() == b.keys() == set(range(1, 7))
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-4), step


def test_kill_and_resume_reproduces_the_uninterrupted_losses(tmp_path, tokenizer_dir):
    common = dict(max_steps=6, save_strategy="steps", save_steps=3)
    run(tiny_args(tmp_path / "straight", tokenizer_dir, **common))

    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run(tiny_args(interrupted, tokenizer_dir, **common), callbacks=[KillAtStep(4)])
    assert last_good_checkpoint(interrupted) == interrupted / "checkpoint-3"
    # A save that was cut short: the folder exists but is incomplete. It must not be resumed from.
    (interrupted / "checkpoint-6").mkdir()
    (interrupted / "checkpoint-6" / "model.safetensors").write_bytes(b"partial")

    run(tiny_args(interrupted, tokenizer_dir, resume_from_checkpoint="last", **common))
    assert (interrupted / "incomplete-checkpoint-6" / "model.safetensors").read_bytes() == b"partial"
    straight, resumed = losses(tmp_path / "straight"), losses(interrupted)
    assert set(resumed) == {1, 2, 3, 4, 5, 6}  # steps 1-3 come from checkpoint-3's trainer state
    for step in resumed:
        assert resumed[step] == pytest.approx(straight[step], abs=1e-5), step


def test_best_fit_packing_is_chosen_by_the_recipe_and_resumes(tmp_path, tokenizer_dir):
    common = dict(max_steps=4, save_strategy="steps", save_steps=2, packing="best_fit")
    run(tiny_args(tmp_path / "straight", tokenizer_dir, **common))
    settings = json.loads((tmp_path / "straight" / "final" / "run_settings.json").read_text())
    assert settings["data"]["packing"] == "best_fit"
    data_state = json.loads((tmp_path / "straight" / "checkpoint-2" / "data_state_rank0.json").read_text())
    assert data_state["packing"] == "best_fit"

    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run(tiny_args(interrupted, tokenizer_dir, **common), callbacks=[KillAtStep(3)])
    run(tiny_args(interrupted, tokenizer_dir, resume_from_checkpoint="last", **common))
    assert losses(interrupted) == pytest.approx(losses(tmp_path / "straight"), abs=1e-5)
    # auto: generation 1's streaming rows
    run(tiny_args(tmp_path / "auto", tokenizer_dir, max_steps=1))
    assert json.loads((tmp_path / "auto" / "final" / "run_settings.json").read_text())["data"]["packing"] == "stream"


def test_checkpoint_is_a_complete_hub_folder_loadable_with_remote_code(tmp_path, tokenizer_dir):
    run(tiny_args(tmp_path / "run", tokenizer_dir, max_steps=2, save_strategy="steps", save_steps=2))
    checkpoint = tmp_path / "run" / "checkpoint-2"
    files = set(os.listdir(checkpoint))
    assert {
        "config.json",
        "model.safetensors",
        "modeling_nanochat_hf.py",
        "configuration_nanochat_hf.py",
        "tokenizer.json",
        "tokenization_nanochat_hf.py",
        "generation_config.json",
        "README.md",
        "optimizer.pt",
        "scheduler.pt",
        "data_state_rank0.json",
        "trainer_state.json",
    } <= files
    card = (checkpoint / "README.md").read_text()
    assert "depth 2" in card and "| batch.tokens_per_step | 1024 |" in card and "| loss |" in card
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD_SCRIPT, str(checkpoint)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "HF_HOME": str(tmp_path / "hf_home")},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["module"].startswith("transformers_modules.")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tokenizer_dir):
    class PoisonWeights(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:
                with torch.no_grad():
                    model.lm_head.weight.fill_(float("nan"))

    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="step 3"):
        run(
            tiny_args(out, tokenizer_dir, max_steps=4, save_strategy="steps", save_steps=2),
            callbacks=[PoisonWeights()],
        )
    assert last_good_checkpoint(out) == out / "checkpoint-2"
    assert not (out / "checkpoint-4").exists()


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, tokenizer_dir, capsys):
    run(tiny_args(tmp_path / "run", tokenizer_dir, dry_run=True, max_steps=0, target_param_data_ratio=20))
    out = capsys.readouterr().out
    assert "gradient_accumulation_steps  2" in out
    assert "decided_by                   target_param_data_ratio" in out
    assert "on the CPU" in out and "on the GPU" not in out  # a CPU run keeps its weights on the CPU
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(depth=0), "depth"),
        (dict(total_batch_size=1000), "total_batch_size"),
        (dict(dataset="/no/such/folder"), "/no/such/folder"),
        (dict(packing="bestfit"), "--packing must be one of auto | stream | best_fit"),
    ],
)
def test_bad_settings_fail_before_training(tmp_path, tokenizer_dir, overrides, message):
    with pytest.raises(UserInputError, match=message):
        run(tiny_args(tmp_path / "run", tokenizer_dir, **overrides))
    assert not (tmp_path / "run" / "final").exists()


def test_continuing_a_model_checks_vocabulary_and_sequence_length(tmp_path, tokenizer_dir):
    run(tiny_args(tmp_path / "base", tokenizer_dir, max_steps=1))
    base = tmp_path / "base" / "final"
    with pytest.raises(UserInputError, match="beyond the model's sequence_len 32"):
        run(tiny_args(tmp_path / "longer", tokenizer_dir, depth=None, model_name_or_path=base, sequence_len=64))
    config = json.loads((base / "config.json").read_text())
    config["vocab_size"] = 1000
    (base / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="vocab_size 1000"):
        run(tiny_args(tmp_path / "other", tokenizer_dir, depth=None, model_name_or_path=base))


def test_resume_from_an_incomplete_checkpoint_is_refused(tmp_path):
    folder = tmp_path / "checkpoint-5"
    folder.mkdir()
    with pytest.raises(UserInputError, match="not a complete checkpoint"):
        resolve_resume_checkpoint(str(folder), tmp_path)


def test_two_processes_equal_one_process_with_double_accumulation(tmp_path, tokenizer_dir):
    """accelerate launch with 2 CPU processes (gloo) against 1 process: the same rows, the same losses."""
    common = dict(max_steps=3, per_device_train_batch_size=8)
    run(tiny_args(tmp_path / "one", tokenizer_dir, **common))  # accumulation 4
    # accumulation 2 on each of 2 processes
    result = launch_pretraining_on_two_processes(tiny_args(tmp_path / "two", tokenizer_dir, **common), timeout=600)
    assert "processes                    2" in result.stdout
    # DDP runs without searching for unused parameters (none exist; with one, DDP would fail the step).
    assert "find_unused_parameters=True" not in result.stderr
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert one.keys() == two.keys() == {1, 2, 3}
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-4), step


# The numbers the shipped configs' dry runs printed before the planner moved to nanochat_hf/planning/.
PINNED_DRY_RUNS = {
    "pretrain_d32_rtx4070.yaml": [
        "parameters                   1,879,048,192",
        "flops_per_token              12,079,595,520",
        "micro_batch                  1",
        "gradient_accumulation_steps  256",
        "steps                        71,680",
        "total_tokens                 37,580,963,840",
        "total_flops                  4.5396e+20",
        "mode                         12gb",
        "training         71,680 steps x 524,288 tokens = 37,580,963,840 tokens (3.758e+10 tokens; 20.0 "
        "tokens/parameter)",
        "total (eager)                           10.09",
        "-> fits: 10.09 of 12.00 GiB (1.91 GiB spare)",
        "40% *        40%      1.06 s             4.8 s       276 s      1.8%  229.3     7.5       1,101           330",
        "Floor: 90.1 days at 100 % of the BF16 peak, 45.1 days at 100 % of the FP8 peak (no run is faster).",
    ],
    "pretrain_d32_8xh100.yaml": [
        "micro_batch                  8",
        "gradient_accumulation_steps  32",
        "mode                         full",
        "-> fits: 66.81 of 80.00 GiB (13.19 GiB spare)",
        "40% *        40%      0.50 s             0.2 s        16 s      1.3%  13.4     0.4         226            68",
    ],
    "pretrain_d21_rtx4070.yaml": [
        "parameters                   684,130,304",
        "flops_per_token              4,277,796,864",
        "steps                        26,097",
        "-> fits: 10.15 of 12.00 GiB (1.85 GiB spare)",
        "40% *        31%      0.48 s             0.8 s       125 s      0.6%  37.7     1.2         181            54",
    ],
}


@pytest.mark.parametrize("config", sorted(PINNED_DRY_RUNS))
def test_dry_runs_of_the_shipped_configs_print_the_pinned_numbers(config, tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("pretrain_recipe", REPO / "recipes" / "pretrain.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    monkeypatch.chdir(tmp_path)  # the configs' relative tokenizer folder is absent: the 65,536 of the config
    assert recipe.main(["--dry-run"], default_config=str(REPO / "recipes" / "configs" / config)) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    for expected in PINNED_DRY_RUNS[config]:
        assert expected in lines, expected
    assert not (tmp_path / "runs").exists()
    # The dry run names the `nanochat-hf plan` command of its plan; that command prints the same report.
    prefix = "The same plan (every mode with this run's knobs): "
    command = next(line[len(prefix) :] for line in lines if line.startswith(prefix))
    dry_run_plan = lines[lines.index(next(line for line in lines if line.startswith("Plan: "))) :]
    assert cli_main(shlex.split(command)[1:]) == 0
    plan_lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    all_modes = [line for line in plan_lines if line.startswith("All modes")]
    assert len(all_modes) == 1 and all_modes[0] in dry_run_plan
    assert plan_lines == dry_run_plan[: len(plan_lines)]


def test_a_run_has_one_sequence_length(tmp_path, tokenizer_dir, capsys):
    """Continuing a 32-token model on 16-token rows: FLOPs, memory and data all use the rows' 16."""
    base = tmp_path / "base"
    NanoChatHFForCausalLM(NanoChatHFConfig.from_depth(2, vocab_size=512, sequence_len=32)).save_pretrained(base)
    run(tiny_args(tmp_path / "run", tokenizer_dir, depth=None, model_name_or_path=base, sequence_len=16, dry_run=True))
    out = capsys.readouterr().out
    shape = ModelShape.from_config(NanoChatHFConfig.from_depth(2, vocab_size=512, sequence_len=16))
    assert f"flops_per_token              {flops_per_token(shape):,}" in out
    assert "sequence_len                 16" in out and "gradient_accumulation_steps  4" in out


def test_a_missing_reporter_package_fails_the_dry_run(tmp_path, tokenizer_dir, monkeypatch):
    """report_to: tensorboard without tensorboard installed: the dry run says so (the Trainer would, after set-up)."""
    for module in ("tensorboard", "tensorboardX"):
        monkeypatch.setitem(sys.modules, module, None)  # what find_spec reports for a package that is absent
    argv = tiny_args(tmp_path / "run", tokenizer_dir, dry_run=True, max_steps=0, report_to="tensorboard")
    with pytest.raises(UserInputError, match="--report_to tensorboard: its package is not installed; pip install"):
        run(argv)
    with pytest.raises(UserInputError, match="--report_to tensorbored: not a reporting integration"):
        run(tiny_args(tmp_path / "run", tokenizer_dir, dry_run=True, max_steps=0, report_to="tensorbored"))
    monkeypatch.undo()
    run(argv)  # with tensorboard installed, the same dry run passes
