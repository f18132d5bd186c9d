"""Finding the checkpoint to resume from, and telling complete checkpoints from interrupted ones.

The Trainer writes `checkpoint-N/` in place: weights, optimizer, scheduler, RNG and (ours) data state,
then `trainer_state.json` last. A run killed while saving leaves a folder without a valid
`trainer_state.json`; such a folder is never resumed from. `set_aside_incomplete` renames it to
`incomplete-checkpoint-N` (nothing is deleted), so that checkpoint rotation cannot count it as one of the
newest and delete the last good one in its favour.
"""

import json
import logging
import re
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..data.pretrain import DATA_STATE_FILENAME
from ..errors import UserInputError


logger = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "optimizer.pt",
    "scheduler.pt",
    DATA_STATE_FILENAME.format(rank=0),
)


def checkpoint_problem(folder: Path) -> str | None:
    """None for a complete checkpoint, else what is wrong with it."""
    match = CHECKPOINT_NAME.match(folder.name)
    if match is None:
        return f"not named {PREFIX_CHECKPOINT_DIR}-N"
    state_path = folder / "trainer_state.json"
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "no readable trainer_state.json (the save was interrupted)"
    if state.get("global_step") != int(match.group(1)):
        return f"trainer_state.json says step {state.get('global_step')}"
    has_weights = (folder / "model.safetensors").exists() or (folder / "model.safetensors.index.json").exists()
    missing = [name for name in REQUIRED_FILES if not (folder / name).exists()]
    if has_weights and "model.safetensors" in missing:
        missing.remove("model.safetensors")
    if missing:
        return f"missing {missing}"
    return None


def checkpoints_in(output_dir: Path) -> list[Path]:
    """`checkpoint-N` folders of a run, oldest step first."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and CHECKPOINT_NAME.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_NAME.match(p.name).group(1)))


def last_good_checkpoint(output_dir) -> Path | None:
    for folder in reversed(checkpoints_in(Path(output_dir))):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("skipping %s: %s", folder, problem)
    return None


def set_aside_incomplete(output_dir) -> list[Path]:
    """Rename interrupted checkpoints out of the Trainer's sight; returns their new paths."""
    moved = []
    for folder in checkpoints_in(Path(output_dir)):
        if checkpoint_problem(folder) is not None:
            target = folder.with_name(f"incomplete-{folder.name}")
            suffix = 1
            while target.exists():
                target, suffix = folder.with_name(f"incomplete-{folder.name}.{suffix}"), suffix + 1
            folder.rename(target)
            logger.warning("moved interrupted checkpoint %s to %s", folder, target)
            moved.append(target)
    return moved


def resolve_resume_checkpoint(resume_from_checkpoint, output_dir) -> Path | None:
    """`last`/`true` -> the newest complete checkpoint in output_dir (None if there is none); a path -> itself,
    checked for completeness."""
    if resume_from_checkpoint in (None, False, "", "false", "False"):
        return None
    if str(resume_from_checkpoint).lower() in ("last", "true"):
        return last_good_checkpoint(output_dir)
    folder = Path(resume_from_checkpoint)
    if not folder.is_dir():
        raise UserInputError(f"--resume_from_checkpoint {folder}: no such folder")
    problem = checkpoint_problem(folder)
    if problem is not None:
        raise UserInputError(f"--resume_from_checkpoint {folder}: not a complete checkpoint ({problem})")
    return folder
