"""Checkpoints and the final folder are complete or absent, whenever the run is killed (training/checkpoints.py,
training/stage.py), and the resume resolver checks completeness for every stage.

Two ways of killing a run:
- a real tiny run in a subprocess, SIGKILLed while it writes a checkpoint, then resumed;
- the same run in this process with every write to disk (file opens, torch.save, safetensors, renames,
  deletions) hooked: at each of those moments the run folder is what a kill would leave, and every
  `checkpoint-N/` and `final/` visible in it must hold every file of a complete one, each readable.
"""

import builtins
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers.modeling_utils
from chat_helpers import chat_args, save_tiny_model
from helpers import tiny_pretrain_argv
from safetensors import safe_open

from nanochat_hf.errors import UserInputError
from nanochat_hf.folder_manifest import write_manifest
from nanochat_hf.training import last_good_checkpoint, parse_pretrain_arguments, run_pretraining
from nanochat_hf.training.checkpoints import (
    checkpoint_problem,
    checkpoints_in,
    final_problem,
    prepare_output_dir,
    publish,
    resolve_resume_checkpoint,
    rotate_checkpoints,
    staging_path,
)
from nanochat_hf.training.pretrain_trainer import CHECKPOINT_FILES
from nanochat_hf.training.sft import run_sft


REPO = Path(__file__).resolve().parents[1]
# What a folder must already hold the moment it becomes visible.
COMPLETE = {
    "checkpoint": {
        "config.json",
        "model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "trainer_state.json",
        *CHECKPOINT_FILES,
    },
    "final": {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "run_settings.json",
        "trainer_state.json",
    },
}
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def read_every_file(folder: Path) -> None:
    """Open each file with the reader of its kind (a truncated or empty file fails here)."""
    for path in folder.iterdir():
        assert path.is_file() and path.stat().st_size > 0, path
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as weights:
                assert list(weights.keys())
        elif path.suffix in (".pt", ".pth"):
            torch.load(path, weights_only=False, map_location="cpu")
        else:
            path.read_bytes()


class FolderWatch:
    """Checks, at every disk write of a run, that each visible checkpoint-N/ and final/ is complete."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.seen: dict[str, dict[str, int]] = {}  # folder name -> {file: size} when it first appeared
        self.moments = 0
        self.busy = False

    def visible(self):
        if not self.run_dir.is_dir():
            return []
        return [
            p for p in self.run_dir.iterdir() if p.is_dir() and (p.name == "final" or p.name.startswith("checkpoint-"))
        ]

    def check(self):
        if self.busy:
            return
        self.busy = True
        try:
            self.moments += 1
            for folder in self.visible():
                files = {p.name: p.stat().st_size for p in folder.iterdir()}
                if folder.name not in self.seen:
                    kind = "final" if folder.name == "final" else "checkpoint"
                    assert COMPLETE[kind] <= set(files), (
                        f"{folder.name} appeared without {COMPLETE[kind] - set(files)}"
                    )
                    read_every_file(folder)
                    self.seen[folder.name] = files
                assert files == self.seen[folder.name], f"{folder.name} changed after it appeared"
        finally:
            self.busy = False

    def hook(self, monkeypatch):
        def around(function):
            def wrapper(*args, **kwargs):
                self.check()
                try:
                    return function(*args, **kwargs)
                finally:
                    self.check()

            return wrapper

        real_open = builtins.open

        def watched_open(file, mode="r", *args, **kwargs):
            if any(flag in mode for flag in "wax+"):
                return around(real_open)(file, mode, *args, **kwargs)
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", watched_open)
        monkeypatch.setattr(io, "open", watched_open)  # pathlib's write_text opens through io.open
        for owner, name in (
            (torch, "save"),
            (transformers.modeling_utils, "safe_save_file"),
            (os, "rename"),
            (os, "replace"),
            (os, "mkdir"),
            (os, "makedirs"),
            (os, "unlink"),
            (os, "remove"),
            (shutil, "rmtree"),
            (shutil, "copy"),
            (shutil, "copyfile"),
        ):
            monkeypatch.setattr(owner, name, around(getattr(owner, name)))


def test_checkpoints_and_final_are_complete_at_every_moment_of_a_run(tmp_path, tokenizer_dir, monkeypatch):
    run_dir = tmp_path / "run"
    argv = tiny_pretrain_argv(
        run_dir, tokenizer_dir, max_steps=3, save_strategy="steps", save_steps=1, save_total_limit=2
    )
    args, training_args = parse_pretrain_arguments(argv)
    watch = FolderWatch(run_dir)
    watch.hook(monkeypatch)
    run_pretraining(args, training_args)
    monkeypatch.undo()

    assert watch.moments > 100  # every file of three checkpoints and the final folder
    # All three checkpoints appeared (the oldest was rotated away, all at once), then the final folder.
    assert set(watch.seen) == {"checkpoint-1", "checkpoint-2", "checkpoint-3", "final"}
    assert [p.name for p in checkpoints_in(run_dir)] == ["checkpoint-2", "checkpoint-3"]
    expected = set(watch.seen["checkpoint-3"])
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", *CHECKPOINT_FILES} <= expected
    assert set(watch.seen["checkpoint-1"]) == set(watch.seen["checkpoint-2"]) == expected
    assert {"model.safetensors", "run_settings.json", "trainer_state.json", "README.md"} <= set(watch.seen["final"])
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []  # no staging left behind


# A tiny run in a fresh interpreter that SIGKILLs itself while checkpoint-4 is being written, right after
# its optimizer state and before its scheduler.
KILL_SCRIPT = """
import os, signal, sys
import torch
from nanochat_hf.training import parse_pretrain_arguments, run_pretraining

real_save = torch.save

def save(obj, f, *args, **kwargs):
    if str(f).endswith("scheduler.pt") and ".checkpoint-4.incomplete" in str(f):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = save
torch.set_num_threads(1)
run_pretraining(*parse_pretrain_arguments(sys.argv[1:]))
"""


def test_a_run_killed_while_saving_leaves_only_complete_checkpoints_and_resumes(tmp_path, tokenizer_dir):
    run_dir = tmp_path / "run"
    argv = tiny_pretrain_argv(run_dir, tokenizer_dir, max_steps=4, save_strategy="steps", save_steps=2)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, *argv], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [p.name for p in checkpoints_in(run_dir)] == ["checkpoint-2"] and not (run_dir / "final").exists()
    read_every_file(run_dir / "checkpoint-2")
    assert (run_dir / ".checkpoint-4.incomplete" / "checkpoint-4" / "optimizer.pt").is_file()  # the cut save

    run_pretraining(*parse_pretrain_arguments(argv + ["--resume_from_checkpoint", "last"]))
    assert [p.name for p in checkpoints_in(run_dir)] == ["checkpoint-2", "checkpoint-4"]
    for folder in (run_dir / "checkpoint-4", run_dir / "final"):
        read_every_file(folder)
    state = json.loads((run_dir / "final" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]
    assert not (run_dir / ".checkpoint-4.incomplete").exists()


# ---------------------------------------------------------------------------------------------------------
# The pieces


def make_checkpoint(folder: Path, step: int, extra=()) -> Path:
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "optimizer.pt", "scheduler.pt", *extra):
        (folder / name).write_text("{}")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_publish_replaces_an_older_folder_and_prepare_tidies_after_a_kill(tmp_path):
    final = tmp_path / "final"
    final.mkdir()
    (final / "old.txt").write_text("old")
    staging = staging_path(final)
    assert staging.name == ".final.incomplete"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    publish(staging, final)
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"] and not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]

    # Killed between setting the old final/ aside and renaming the new one: the old one comes back.
    os.rename(final, tmp_path / ".final.replaced")
    (tmp_path / ".checkpoint-9.incomplete").mkdir()
    (tmp_path / ".checkpoint-3.deleting").mkdir()
    prepare_output_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    assert (final / "new.txt").read_text() == "new"


def test_rotation_keeps_the_newest_and_the_best(tmp_path):
    for step in (1, 2, 3, 4):
        make_checkpoint(tmp_path / f"checkpoint-{step}", step)
    assert [p.name for p in rotate_checkpoints(tmp_path, 2, keep=str(tmp_path / "checkpoint-1"))] == [
        "checkpoint-2",
        "checkpoint-3",
    ]
    assert [p.name for p in checkpoints_in(tmp_path)] == ["checkpoint-1", "checkpoint-4"]
    assert rotate_checkpoints(tmp_path, 1, keep=str(tmp_path / "checkpoint-1")) == []  # best + newest
    assert [p.name for p in rotate_checkpoints(tmp_path, 1)] == ["checkpoint-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]


def test_resume_resolver_checks_every_file_of_a_stage(tmp_path):
    make_checkpoint(tmp_path / "checkpoint-2", 2, extra=CHECKPOINT_FILES)
    without_data = make_checkpoint(tmp_path / "checkpoint-4", 4)
    # The Trainer's files alone complete an SFT checkpoint; pretraining also needs its data position.
    assert resolve_resume_checkpoint("last", tmp_path) == without_data
    assert resolve_resume_checkpoint("last", tmp_path, CHECKPOINT_FILES) == tmp_path / "checkpoint-2"
    with pytest.raises(UserInputError, match=r"not a complete checkpoint \(missing \['data_state_rank0.json'\]\)"):
        resolve_resume_checkpoint(str(without_data), tmp_path, CHECKPOINT_FILES)
    (tmp_path / "checkpoint-2" / "scheduler.pt").unlink()
    assert last_good_checkpoint(tmp_path, CHECKPOINT_FILES) is None


def test_sft_refuses_to_resume_from_an_incomplete_checkpoint(tmp_path):
    base = save_tiny_model(tmp_path / "base", chat=False)
    cut = tmp_path / "run" / "checkpoint-3"
    cut.mkdir(parents=True)
    (cut / "model.safetensors").write_bytes(b"partial")
    with pytest.raises(UserInputError, match="not a complete checkpoint"):
        run_sft(*chat_args(tmp_path / "run", base, resume_from_checkpoint=str(cut)))
    assert not (tmp_path / "run" / "final").exists()


def test_completeness_covers_every_file(tmp_path):
    # Written in place, without a manifest: a 0-byte file beside a valid trainer_state.json is a cut save.
    legacy = make_checkpoint(tmp_path / "checkpoint-2", 2)
    (legacy / "optimizer.pt").write_bytes(b"")
    assert checkpoint_problem(legacy) == "empty ['optimizer.pt'] (the save was interrupted)"
    # With a manifest, every listed file must have the size that was written.
    staged = make_checkpoint(tmp_path / "checkpoint-4", 4)
    write_manifest(staged)
    assert checkpoint_problem(staged) is None
    (staged / "optimizer.pt").write_bytes(b"")
    assert checkpoint_problem(staged) == "optimizer.pt has 0 bytes, 2 were written"
    (staged / "optimizer.pt").unlink()
    assert checkpoint_problem(staged) == "missing ['optimizer.pt']"
    assert last_good_checkpoint(tmp_path) is None

    final = tmp_path / "final"
    assert final_problem(final) == "no such folder"
    final.mkdir()
    (final / "modeling_nanochat_hf.py").write_text("# only the modeling file")
    assert final_problem(final) == "missing ['model.safetensors', 'config.json']"


def test_interrupted_checkpoints_set_aside_by_an_earlier_run_are_removed(tmp_path):
    make_checkpoint(tmp_path / "checkpoint-2", 2)
    (tmp_path / "checkpoint-4").mkdir()
    prepare_output_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "incomplete-checkpoint-4"]
    (tmp_path / "checkpoint-6").mkdir()
    prepare_output_dir(tmp_path)  # the next run: the old one goes, the new one is set aside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "incomplete-checkpoint-6"]
