"""Faults a run must survive without losing a good checkpoint (training/stage.py, checkpoints.py, save_guards.py).

- Kills: a real tiny run in a fresh interpreter SIGKILLs itself at a chosen moment of a save (a file of a
  staged checkpoint, the rename that publishes it, the final folder's weights; pretraining and SFT; a
  resume from an older checkpoint while newer ones exist), then `--resume_from_checkpoint last` finishes
  it and the losses and weights are those of the uninterrupted run.
- A full disk: `ENOSPC` at each write of a save, in turn; a free-space check before any write.
- Non-finite weights at a save step; resuming at or beyond max_steps; changed settings on resume.
"""

import builtins
import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers.modeling_utils
from chat_helpers import chat_args, save_tiny_model
from helpers import tiny_pretrain_argv
from safetensors.torch import load_file
from transformers import TrainerCallback

from nanochat_hf.errors import UserInputError
from nanochat_hf.training import parse_pretrain_arguments, run_pretraining, save_guards
from nanochat_hf.training.checkpoints import MANIFEST_FILENAME, checkpoint_problem, checkpoints_in
from nanochat_hf.training.pretrain_trainer import CHECKPOINT_FILES
from nanochat_hf.training.save_guards import DiskFullError, NonFiniteError
from nanochat_hf.training.sft import run_sft


REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("one_cpu_thread")

# A tiny run in a fresh interpreter that SIGKILLs itself at the first write matching argv[1]
# ("<what>:<path fragment>": what is torch.save, weights (safetensors), rename (its source), or open).
# argv[2] is the stage ("pretrain", or "sft" with a JSON of chat_args keywords in argv[3]).
KILL_SCRIPT = f"""
import builtins, functools, json, os, signal, sys
sys.path.insert(0, {str(TESTS)!r})
import torch
import transformers.modeling_utils as modeling_utils

what, fragment = sys.argv[1].split(":", 1)

def killing(function, kind):
    @functools.wraps(function)  # the embedded corpus walks os's C functions live: keep os.rename's identity
    def wrapper(*args, **kwargs):
        target = args[1] if kind in ("save", "weights") else args[0]
        if kind == what and fragment in str(target):
            os.kill(os.getpid(), signal.SIGKILL)
        return function(*args, **kwargs)
    return wrapper

torch.save = killing(torch.save, "save")
modeling_utils.safe_save_file = killing(modeling_utils.safe_save_file, "weights")
os.rename = killing(os.rename, "rename")
torch.set_num_threads(1)
if sys.argv[2] == "pretrain":
    from nanochat_hf.training import parse_pretrain_arguments, run_pretraining
    run_pretraining(*parse_pretrain_arguments(sys.argv[3:]))
else:
    from chat_helpers import chat_args
    from nanochat_hf.training.sft import run_sft
    keywords = json.loads(sys.argv[3])
    run_sft(*chat_args(keywords.pop("output_dir"), keywords.pop("model"), **keywords))
"""


def run_killed(kill_at: str, stage: str, *argv: str) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, kill_at, stage, *argv],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]


def losses(run_dir: Path) -> dict[int, float]:
    state = json.loads((run_dir / "final" / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def epochs(run_dir: Path) -> dict[int, float]:
    state = json.loads((run_dir / "final" / "trainer_state.json").read_text())
    return {entry["step"]: entry["epoch"] for entry in state["log_history"] if "loss" in entry}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=1e-6, msg=name)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


PRETRAIN = dict(max_steps=6, save_strategy="steps", save_steps=2)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, tokenizer_dir):
    """The uninterrupted run every killed one is compared with."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    run_pretraining(*parse_pretrain_arguments(tiny_pretrain_argv(run_dir, tokenizer_dir, **PRETRAIN)))
    return run_dir


# ---------------------------------------------------------------------------------------------------------
# Kills


@pytest.mark.parametrize(
    "kill_at, complete_after_kill",
    [
        ("save:.checkpoint-4.incomplete/checkpoint-4/optimizer.pt", ["checkpoint-2"]),  # a file of the save
        ("weights:.checkpoint-4.incomplete/checkpoint-4/model.safetensors", ["checkpoint-2"]),
        ("rename:.checkpoint-4.incomplete/checkpoint-4", ["checkpoint-2"]),  # the publishing rename
        ("weights:.final.incomplete/model.safetensors", ["checkpoint-2", "checkpoint-4", "checkpoint-6"]),
    ],
)
def test_a_pretraining_run_killed_while_saving_resumes_to_the_uninterrupted_result(
    tmp_path, tokenizer_dir, straight_run, kill_at, complete_after_kill
):
    run_dir = tmp_path / "run"
    argv = tiny_pretrain_argv(run_dir, tokenizer_dir, **PRETRAIN)
    run_killed(kill_at, "pretrain", *argv)
    assert [p.name for p in checkpoints_in(run_dir)] == complete_after_kill
    assert not (run_dir / "final").exists()
    for folder in checkpoints_in(run_dir):
        assert checkpoint_problem(folder, CHECKPOINT_FILES) is None

    run_pretraining(*parse_pretrain_arguments(argv + ["--resume_from_checkpoint", "last"]))
    assert losses(run_dir) == pytest.approx(losses(straight_run), abs=1e-6)
    assert_same_weights(run_dir / "final", straight_run / "final")
    assert epochs(run_dir) == pytest.approx(epochs(straight_run))  # counted from step 0 after the resume
    assert epochs(run_dir)[6] == pytest.approx(1.0)
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]


def test_resuming_from_an_older_checkpoint_never_overwrites_a_newer_one(tmp_path, tokenizer_dir, straight_run):
    run_dir = tmp_path / "run"
    argv = tiny_pretrain_argv(run_dir, tokenizer_dir, **PRETRAIN)
    run_pretraining(*parse_pretrain_arguments(argv))
    newer = {step: digest(run_dir / f"checkpoint-{step}") for step in (4, 6)}

    # Resume from checkpoint-2 and die while the resumed run rewrites checkpoint-4's optimizer state.
    run_killed(
        "save:.checkpoint-4.incomplete/checkpoint-4/optimizer.pt",
        "pretrain",
        *argv,
        "--resume_from_checkpoint",
        str(run_dir / "checkpoint-2"),
    )
    for step in (4, 6):  # the newer checkpoints were set aside, byte for byte, before anything was rewritten
        kept = run_dir / f"superseded-checkpoint-{step}"
        assert digest(kept) == newer[step]
    assert [p.name for p in checkpoints_in(run_dir)] == ["checkpoint-2"]

    run_pretraining(*parse_pretrain_arguments(argv + ["--resume_from_checkpoint", "last"]))
    assert losses(run_dir) == pytest.approx(losses(straight_run), abs=1e-6)
    assert_same_weights(run_dir / "final", straight_run / "final")
    assert digest(run_dir / "superseded-checkpoint-6") == newer[6]


def test_an_sft_run_killed_while_saving_resumes_from_its_last_complete_checkpoint(tmp_path):
    base = save_tiny_model(tmp_path / "base", chat=False)
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2)
    straight = tmp_path / "straight"
    run_sft(*chat_args(straight, base, **settings))

    run_dir = tmp_path / "run"
    keywords = {"output_dir": str(run_dir), "model": str(base), **settings}
    run_killed("save:.checkpoint-4.incomplete/checkpoint-4/scheduler.pt", "sft", json.dumps(keywords))
    assert [p.name for p in checkpoints_in(run_dir)] == ["checkpoint-2"]
    assert (run_dir / ".checkpoint-4.incomplete").is_dir()  # the cut save, under its hidden name

    run_sft(*chat_args(run_dir, base, resume_from_checkpoint="last", **settings))
    assert losses(run_dir) == pytest.approx(losses(straight), abs=1e-6)
    assert_same_weights(run_dir / "final", straight / "final")
    assert not (run_dir / ".checkpoint-4.incomplete").exists()


# ---------------------------------------------------------------------------------------------------------
# Resuming at the end, with other settings


def test_resuming_a_finished_run_trains_nothing_more(tmp_path, tokenizer_dir):
    run_dir = tmp_path / "run"
    argv = tiny_pretrain_argv(run_dir, tokenizer_dir, **PRETRAIN)
    run_pretraining(*parse_pretrain_arguments(argv))
    last = digest(run_dir / "checkpoint-6")
    (run_dir / "final").rename(tmp_path / "first-final")

    run_pretraining(*parse_pretrain_arguments(argv + ["--resume_from_checkpoint", "last"]))
    assert [p.name for p in checkpoints_in(run_dir)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert digest(run_dir / "checkpoint-6") == last
    state = json.loads((run_dir / "final" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and state["max_steps"] == 6
    assert_same_weights(run_dir / "final", tmp_path / "first-final")

    with pytest.raises(UserInputError, match=r"at step 6, beyond this run's max_steps 4"):
        run_pretraining(*parse_pretrain_arguments(argv[:] + ["--max_steps", "4", "--resume_from_checkpoint", "last"]))
    assert [p.name for p in checkpoints_in(run_dir)] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_changed_settings_on_resume_are_warned_and_another_shape_is_refused(tmp_path, tokenizer_dir, caplog):
    run_dir = tmp_path / "run"
    argv = tiny_pretrain_argv(run_dir, tokenizer_dir, max_steps=4, save_strategy="steps", save_steps=2)
    run_pretraining(*parse_pretrain_arguments(argv + ["--max_steps", "2"]))
    with pytest.raises(UserInputError, match=r"checkpoint is of another model \(depth 2 -> 3"):
        run_pretraining(*parse_pretrain_arguments(argv + ["--depth", "3", "--resume_from_checkpoint", "last"]))
    with caplog.at_level("WARNING"):
        run_pretraining(*parse_pretrain_arguments(argv + ["--matrix_lr", "0.05", "--resume_from_checkpoint", "last"]))
    assert "optimizer.matrix_lr 0.02 -> 0.05" in caplog.text


# ---------------------------------------------------------------------------------------------------------
# A full disk


class FullDisk:
    """Every write of a run (file opens for writing, torch.save, safetensors) counted; the n-th fails with ENOSPC."""

    def __init__(self, fail_at: int | None, inside: str):
        self.fail_at, self.inside, self.count = fail_at, inside, 0

    def hook(self, monkeypatch):
        def failing(function, path_of):
            def wrapper(*args, **kwargs):
                if self.inside in str(path_of(args, kwargs)):
                    self.count += 1
                    if self.count == self.fail_at:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path_of(args, kwargs)))
                return function(*args, **kwargs)

            return wrapper

        real_open = builtins.open

        def opening(file, mode="r", *args, **kwargs):
            if any(flag in mode for flag in "wax+"):
                return failing(real_open, lambda a, k: a[0])(file, mode, *args, **kwargs)
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", opening)
        monkeypatch.setattr(io, "open", opening)
        monkeypatch.setattr(torch, "save", failing(torch.save, lambda a, k: a[1]))
        monkeypatch.setattr(
            transformers.modeling_utils,
            "safe_save_file",
            failing(transformers.modeling_utils.safe_save_file, lambda a, k: a[1]),
        )


@pytest.mark.parametrize("inside", [".checkpoint-4.incomplete", ".final.incomplete"])
def test_a_full_disk_at_any_write_is_one_clear_error_and_leaves_only_complete_folders(
    tmp_path, tokenizer_dir, monkeypatch, inside
):
    argv = dict(max_steps=4, save_strategy="steps", save_steps=2)
    counter = FullDisk(None, inside)
    counter.hook(monkeypatch)
    run_pretraining(*parse_pretrain_arguments(tiny_pretrain_argv(tmp_path / "count", tokenizer_dir, **argv)))
    monkeypatch.undo()
    writes = counter.count
    assert writes >= 5

    for fail_at in range(1, writes + 1):
        run_dir = tmp_path / f"full-{fail_at}"
        FullDisk(fail_at, inside).hook(monkeypatch)
        with pytest.raises(DiskFullError) as stopped:
            run_pretraining(*parse_pretrain_arguments(tiny_pretrain_argv(run_dir, tokenizer_dir, **argv)))
        monkeypatch.undo()
        message = str(stopped.value)
        assert "\n" not in message and message.startswith("no space left on /")
        assert inside in message  # the file being written
        last_good = run_dir / ("checkpoint-4" if inside == ".final.incomplete" else "checkpoint-2")
        assert f"the last good checkpoint {last_good} is intact" in message
        assert [p.name for p in run_dir.iterdir() if p.name.startswith(".") or p.name == "final"] == []
        for folder in checkpoints_in(run_dir):
            assert checkpoint_problem(folder, CHECKPOINT_FILES) is None


def test_too_little_free_space_is_refused_before_writing(tmp_path, tokenizer_dir, monkeypatch):
    run_dir = tmp_path / "run"
    real_usage = save_guards.shutil.disk_usage
    monkeypatch.setattr(save_guards.shutil, "disk_usage", lambda path: real_usage(path)._replace(free=2**20))
    with pytest.raises(DiskFullError, match=r"not enough space on /.* to write checkpoint-2: about .* MiB needed"):
        run_pretraining(*parse_pretrain_arguments(tiny_pretrain_argv(run_dir, tokenizer_dir, **PRETRAIN)))
    assert not checkpoints_in(run_dir)
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------------------------------------
# Non-finite weights


class PoisonAtStep(TrainerCallback):
    """A NaN in one weight right after step `step` (as a blown-up update would leave), before its save."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")


def test_weights_gone_non_finite_at_a_save_step_are_not_saved(tmp_path, tokenizer_dir):
    run_dir = tmp_path / "run"
    args, training_args = parse_pretrain_arguments(tiny_pretrain_argv(run_dir, tokenizer_dir, **PRETRAIN))
    with pytest.raises(
        NonFiniteError, match=rf"not saving checkpoint-4; the last good checkpoint {run_dir}/checkpoint-2"
    ):
        run_pretraining(args, training_args, extra_callbacks=[PoisonAtStep(4)])
    assert [p.name for p in checkpoints_in(run_dir)] == ["checkpoint-2"]
    assert all(torch.isfinite(t).all() for t in weights(run_dir / "checkpoint-2").values())
    manifest = json.loads((run_dir / "checkpoint-2" / MANIFEST_FILENAME).read_text())
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= set(manifest)
