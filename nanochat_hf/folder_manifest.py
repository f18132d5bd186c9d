"""A folder's manifest, `checkpoint_files.json`: the size of each of its files, recorded once they are written.

A saved folder (a checkpoint, a final model) is complete when every file its manifest lists is there at
exactly that size: a kill while any file was being written shows as a wrong size or a missing file.
"""

import json
import os
from pathlib import Path

from .atomic import write_json_atomically


MANIFEST_FILENAME = "checkpoint_files.json"


def write_manifest(folder) -> Path:
    """Record the size of every file of a fully written `folder` (before it is published)."""
    folder = Path(folder)
    sizes = {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILENAME
    }
    path = folder / MANIFEST_FILENAME
    with open(path, "w", encoding="utf-8") as f:
        json.dump(sizes, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    return path


def record_rewritten_files(folder, names) -> None:
    """Record the new sizes of files a later step rewrote on purpose in a published folder (or added to it).

    `nanochat-hf report` embeds the report in README.md and adds report.md and its plots: without this the
    manifest would still list the model card's old size, and the folder would be judged interrupted (the
    quickstart would then redo the whole stage). No manifest, nothing to do.
    """
    folder = Path(folder)
    path = folder / MANIFEST_FILENAME
    if not path.is_file():
        return
    sizes = json.loads(path.read_text(encoding="utf-8"))
    for name in names:
        if (folder / name).is_file():
            sizes[name] = (folder / name).stat().st_size
    mode = path.stat().st_mode & 0o777
    write_json_atomically(path, sizes)
    path.chmod(mode)  # the atomic write goes through a private temporary file: keep the manifest's permissions


def manifest_problem(folder: Path) -> str | None:
    """None when every file the manifest lists is there at its recorded size (or there is no manifest)."""
    path = Path(folder) / MANIFEST_FILENAME
    if not path.exists():
        return None
    try:
        sizes = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(sizes, dict):
            raise ValueError("not an object")
    except (OSError, ValueError):
        return f"unreadable {MANIFEST_FILENAME}"
    for name, size in sizes.items():
        file = Path(folder) / name
        if not file.is_file():
            return f"missing {name}"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} were written"
    return None
