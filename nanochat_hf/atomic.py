"""Writing files and folders so that they appear whole or not at all.

Everything is first written beside its destination under a hidden temporary name, then renamed into
place (a rename within one folder is atomic). A failure or a kill part-way leaves the destination as it
was - absent, or holding its previous complete version - never half-written.
"""

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import RunStoppedError, UserInputError


# How libraries word a write that failed for lack of space, when they do not raise OSError(ENOSPC).
DISK_FULL_WORDS = ("no space left", "code: 28", "os error 28", "unexpected pos", "disk quota exceeded")


def is_disk_full(err: BaseException) -> bool:
    """Whether `err`, or an exception it was raised from, is a write failing for lack of space."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(words in str(err).lower() for words in DISK_FULL_WORDS):
            return True
        err = err.__cause__ or err.__context__
    return False


def mount_point(path) -> str:
    """The mount point of the file system holding `path` (its nearest existing ancestor)."""
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return str(path)


@contextlib.contextmanager
def atomic_folder(destination: str | os.PathLike):
    """Yield a temporary folder beside `destination`; rename it to `destination` if the block succeeds.

    An existing `destination` is refused (nothing already on disk is replaced).
    """
    destination = Path(destination)
    if destination.exists():
        raise UserInputError(f"{destination}: already exists; choose a new destination or remove it first")
    check_parent(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
    try:
        yield staging
        os.rename(staging, destination)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, Exception) and is_disk_full(err):
            raise RunStoppedError(
                f"no space left on {mount_point(destination.parent)} while writing {destination}; nothing was "
                "left there. Free some space and run it again"
            ) from err
        raise


def check_parent(destination: Path) -> None:
    """Refuse a destination below a file (a folder cannot be made there)."""
    for parent in destination.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserInputError(f"{destination}: {parent} is a file, so no folder can be made below it")
            return


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` (replacing any previous version only once the new one is complete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomically(path: str | os.PathLike, payload) -> Path:
    return write_text_atomically(path, json.dumps(payload, indent=1))
