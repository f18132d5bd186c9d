"""Checkpoint and final folders that are complete or absent, and the checkpoint to resume from.

Every folder a stage saves - `checkpoint-N/` and `final/` - is written under a hidden staging name beside
its destination (`.checkpoint-N.incomplete`) and renamed into place once every process has written its
part; a rename within one folder is atomic. A kill at any moment therefore leaves each `checkpoint-N/`
and `final/` either complete or absent. The same holds when they go away: rotation renames a checkpoint
to a hidden name before deleting it, and a replaced `final/` is renamed aside before the new one takes its
name. `prepare_output_dir` tidies what a killed run left behind (staging folders are removed, a set-aside
`final/` whose replacement never arrived is put back).

Completeness covers every file: just before a staged folder is published, `write_manifest` records the
size of each of its files in `checkpoint_files.json`, and `checkpoint_problem` requires each listed file at
exactly that size. Checkpoints without a manifest (written in place by other tools or older versions) are
checked file by file: the required files present and none of them empty. An interrupted one is never
resumed from; `set_aside_incomplete` renames it to `incomplete-checkpoint-N` so that rotation cannot count
it as one of the newest, and the next run deletes it (an interrupted checkpoint cannot be resumed from).

Resuming from a checkpoint older than the newest complete one would overwrite the newer ones as the run
reaches their steps: `set_aside_newer` renames them to `superseded-checkpoint-N` first (nothing deleted).
"""

import json
import logging
import os
import re
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import UserInputError
from ..folder_manifest import MANIFEST_FILENAME, manifest_problem


logger = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
STAGING_SUFFIX = ".incomplete"
REPLACED_SUFFIX = ".replaced"
DELETING_SUFFIX = ".deleting"
# One of each group must be present: the weights (full model, sharded, or a LoRA adapter) and their config.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")
CONFIG_FILES = ("config.json", "adapter_config.json")
TRAINING_STATE_FILES = ("optimizer.pt", "scheduler.pt")
INCOMPLETE_PREFIX = "incomplete-"
SUPERSEDED_PREFIX = "superseded-"


def folder_size(folder) -> int:
    """Bytes of every file under `folder`."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def staging_path(destination) -> Path:
    """Where `destination` is written before it is renamed into place."""
    destination = Path(destination)
    return destination.with_name(f".{destination.name}{STAGING_SUFFIX}")


def publish(staging, destination) -> Path:
    """Rename a complete `staging` folder to `destination`, replacing an older `destination` if there is one."""
    staging, destination = Path(staging), Path(destination)
    aside = destination.with_name(f".{destination.name}{REPLACED_SUFFIX}")
    if destination.exists():
        if aside.exists():
            shutil.rmtree(aside)
        os.rename(destination, aside)
    os.rename(staging, destination)
    if aside.exists():
        shutil.rmtree(aside)
    return destination


def remove_atomically(folder) -> None:
    """Delete a folder so that it disappears at once: renamed to a hidden name, then removed."""
    folder = Path(folder)
    doomed = folder.with_name(f".{folder.name}{DELETING_SUFFIX}")
    os.rename(folder, doomed)
    shutil.rmtree(doomed)


def prepare_output_dir(output_dir, extra_files=()) -> None:
    """Before a run (main process): clear what a killed run left half-done, set aside interrupted checkpoints."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return
    for path in sorted(output_dir.iterdir()):
        if not path.is_dir() or not path.name.startswith("."):
            continue
        if path.name.endswith(REPLACED_SUFFIX):
            original = path.with_name(path.name[1 : -len(REPLACED_SUFFIX)])
            if not original.exists():  # killed between setting the old folder aside and renaming the new one
                os.rename(path, original)
                logger.warning("restored %s, whose replacement was never completed", original)
                continue
        if path.name.endswith((STAGING_SUFFIX, REPLACED_SUFFIX, DELETING_SUFFIX)):
            shutil.rmtree(path)
            logger.info("removed %s, left behind by an interrupted save", path)
    for path in sorted(output_dir.glob(f"{INCOMPLETE_PREFIX}{PREFIX_CHECKPOINT_DIR}-*")):
        if path.is_dir():  # set aside by an earlier run; an interrupted checkpoint cannot be resumed from
            shutil.rmtree(path)
            logger.info("removed %s (an interrupted checkpoint set aside by an earlier run)", path)
    set_aside_incomplete(output_dir, extra_files)


def checkpoint_problem(folder: Path, extra_files=()) -> str | None:
    """None for a complete checkpoint, else what is wrong with it. `extra_files` are a stage's own files."""
    folder = Path(folder)
    match = CHECKPOINT_NAME.match(folder.name)
    if match is None:
        return f"not named {PREFIX_CHECKPOINT_DIR}-N"
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "no readable trainer_state.json (the save was interrupted)"
    if state.get("global_step") != int(match.group(1)):
        return f"trainer_state.json says step {state.get('global_step')}"
    missing = [name for name in (*TRAINING_STATE_FILES, *extra_files) if not (folder / name).exists()]
    for group in (WEIGHT_FILES, CONFIG_FILES):
        if not any((folder / name).exists() for name in group):
            missing.append(group[0])
    if missing:
        return f"missing {missing}"
    if (folder / MANIFEST_FILENAME).exists():
        return manifest_problem(folder)
    empty = sorted(p.name for p in folder.iterdir() if p.is_file() and p.stat().st_size == 0)
    if empty:
        return f"empty {empty} (the save was interrupted)"
    return None


def checkpoint_step(folder) -> int:
    return int(CHECKPOINT_NAME.match(Path(folder).name).group(1))


def final_problem(folder) -> str | None:
    """None for a complete final model folder, else what is wrong with it."""
    folder = Path(folder)
    if not folder.is_dir():
        return "no such folder"
    if (folder / MANIFEST_FILENAME).exists():
        return manifest_problem(folder)
    missing = [group[0] for group in (WEIGHT_FILES, CONFIG_FILES) if not any((folder / n).exists() for n in group)]
    if missing:
        return f"missing {missing}"
    empty = sorted(p.name for p in folder.iterdir() if p.is_file() and p.stat().st_size == 0)
    return f"empty {empty}" if empty else None


def checkpoints_in(output_dir: Path) -> list[Path]:
    """`checkpoint-N` folders of a run, oldest step first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and CHECKPOINT_NAME.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_NAME.match(p.name).group(1)))


def last_good_checkpoint(output_dir, extra_files=()) -> Path | None:
    for folder in reversed(checkpoints_in(Path(output_dir))):
        problem = checkpoint_problem(folder, extra_files)
        if problem is None:
            return folder
        logger.warning("skipping %s: %s", folder, problem)
    return None


def set_aside_incomplete(output_dir, extra_files=()) -> list[Path]:
    """Rename interrupted checkpoints out of the Trainer's sight; returns their new paths."""
    moved = []
    for folder in checkpoints_in(Path(output_dir)):
        if checkpoint_problem(folder, extra_files) is not None:
            target = rename_aside(folder, INCOMPLETE_PREFIX)
            logger.warning("moved interrupted checkpoint %s to %s", folder, target)
            moved.append(target)
    return moved


def rename_aside(folder: Path, prefix: str) -> Path:
    """Rename `folder` to `<prefix><name>` (with a number appended if that exists); returns the new path."""
    target = folder.with_name(f"{prefix}{folder.name}")
    suffix = 1
    while target.exists():
        target, suffix = folder.with_name(f"{prefix}{folder.name}.{suffix}"), suffix + 1
    folder.rename(target)
    return target


def set_aside_newer(output_dir, resume) -> list[Path]:
    """Before resuming from `resume`: rename the checkpoints of later steps to `superseded-checkpoint-N`,
    so that the resumed run, reaching their steps, cannot overwrite them. Returns their new paths."""
    if resume is None or CHECKPOINT_NAME.match(Path(resume).name) is None:
        return []
    later = [f for f in checkpoints_in(Path(output_dir)) if checkpoint_step(f) > checkpoint_step(resume)]
    moved = []
    for folder in later:
        target = rename_aside(folder, SUPERSEDED_PREFIX)
        logger.warning(
            "resuming from %s: moved the later checkpoint %s to %s so that this run cannot overwrite it",
            resume,
            folder,
            target,
        )
        moved.append(target)
    return moved


def rotate_checkpoints(output_dir, save_total_limit: int | None, keep: str | None = None) -> list[Path]:
    """Delete the oldest checkpoints beyond `save_total_limit`, never `keep` (the best one); returns them.

    As the Trainer does: the best checkpoint counts as the newest, and with a limit of 1 a best checkpoint
    that is not the newest is kept beside it.
    """
    ordered = checkpoints_in(Path(output_dir))
    if not save_total_limit or len(ordered) <= save_total_limit:
        return []
    newest = ordered[-1]
    best = next((f for f in ordered if keep is not None and f.resolve() == Path(keep).resolve()), None)
    limit = save_total_limit
    if best is not None:
        ordered.remove(best)
        ordered.append(best)
        if save_total_limit == 1 and best != newest:
            limit = 2
    doomed = ordered[: len(ordered) - limit]
    for folder in doomed:
        logger.info("deleting %s (save_total_limit=%d)", folder, save_total_limit)
        remove_atomically(folder)
    return doomed


def resolve_resume_checkpoint(resume_from_checkpoint, output_dir, extra_files=()) -> Path | None:
    """`last`/`true` -> the newest complete checkpoint in output_dir (None if there is none); a path -> itself,
    checked for completeness."""
    if resume_from_checkpoint in (None, False, "", "false", "False"):
        return None
    if str(resume_from_checkpoint).lower() in ("last", "true"):
        return last_good_checkpoint(output_dir, extra_files)
    folder = Path(resume_from_checkpoint)
    if not folder.is_dir():
        raise UserInputError(f"--resume_from_checkpoint {folder}: no such folder")
    problem = checkpoint_problem(folder, extra_files)
    if problem is not None:
        raise UserInputError(f"--resume_from_checkpoint {folder}: not a complete checkpoint ({problem})")
    return folder
