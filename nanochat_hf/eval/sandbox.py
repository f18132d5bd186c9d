"""Running model-written Python (HumanEval) in a throwaway, limited, isolated subprocess - only when asked.

Code execution is OFF by default: `Sandbox(enabled=False).run(...)` raises `CodeExecutionDisabled` and
nothing is started. A user opts in with `nanochat-hf eval ... --allow-code-execution` (or `enabled=True`).

Each program runs in a fresh interpreter (`python -I -B`, no PYTHONPATH, no user site, scrubbed
environment, stdin closed) in a new session, with a new temporary folder as working directory, HOME and
TMPDIR; the folder is deleted afterwards. `sandbox_guard.py` runs first in the child and applies, in this
order, Landlock (writes only inside that folder, no TCP, no signals to outside processes), a seccomp
filter (no new processes, no sockets, no io_uring, no ptrace), and resource limits (address space, CPU
time, size of written files - stdout and stderr are files, so that is the output limit). The parent
waits at most `timeout_s` and then kills the whole process group; it kills the group after a normal exit
too, so nothing the program started outlives it.

By default a program runs only if the seccomp filter was installed (Linux on x86_64 or arm64); where it
cannot be (macOS, another architecture) `run` raises `SandboxUnavailable` instead of running the code with
weaker protection. This is a strong accident- and mischief-barrier for evaluation, not a security boundary
against a determined attacker with a kernel exploit; run untrusted code in a VM or container if that matters.
"""

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserInputError


GUARD = Path(__file__).with_name("sandbox_guard.py")
NOT_ISOLATED_EXIT = 97  # the guard's exit status when isolation was required but not available


class CodeExecutionDisabled(UserInputError):
    pass


class SandboxUnavailable(UserInputError):
    pass


@dataclass(frozen=True)
class SandboxLimits:
    """nanochat's HumanEval limits (5 s, 256 MiB), plus an output limit."""

    timeout_s: float = 5.0
    memory_bytes: int = 256 * 2**20
    output_bytes: int = 2**20


@dataclass
class SandboxResult:
    passed: bool  # exited with status 0 (for HumanEval: every assertion held)
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    memory_exceeded: bool = False
    output_truncated: bool = False
    isolation: dict = field(default_factory=dict)  # what the guard applied: {"landlock": "ABI 7", "seccomp": ...}
    workdir: str = ""  # the throwaway folder it ran in (deleted; named in its processes' command lines)

    @property
    def error(self) -> str | None:
        """The last line of the traceback (e.g. "AssertionError"), or why the program was stopped."""
        if self.passed:
            return None
        if self.timed_out:
            return "timed out (process group killed)"
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit status {self.returncode}"


class Sandbox:
    """Runs Python programs under `limits`; refuses to run anything unless `enabled`.

    Args:
        enabled: the user's explicit opt-in to executing model-written code.
        limits: time, memory and output limits.
        isolate: apply Landlock and seccomp (turn off only to test the other layers).
        require_isolation: refuse to run a program when the seccomp filter cannot be installed.
    """

    def __init__(
        self,
        enabled: bool = False,
        limits: SandboxLimits = SandboxLimits(),
        isolate: bool = True,
        require_isolation: bool = True,
    ):
        self.enabled = enabled
        self.limits = limits
        self.isolate = isolate
        self.require_isolation = require_isolation

    def check_enabled(self) -> None:
        if not self.enabled:
            raise CodeExecutionDisabled(
                "running model-written code is off; HumanEval executes the model's programs, so opt in with "
                "--allow-code-execution (Python: Sandbox(enabled=True)) to run them in the sandbox"
            )

    def run(self, program: str) -> SandboxResult:
        self.check_enabled()
        limits = self.limits
        settings = {
            "memory_bytes": limits.memory_bytes,
            "output_bytes": limits.output_bytes,
            "cpu_seconds": math.ceil(limits.timeout_s) + 1,  # a backstop to the wall-clock kill
            "isolate": self.isolate,
            "require_seccomp": self.require_isolation,
        }
        with tempfile.TemporaryDirectory(prefix="nanochat-sandbox-") as workdir:
            program_path = Path(workdir) / "program.py"
            program_path.write_text(program, encoding="utf-8")
            out_path, err_path = Path(workdir) / ".stdout", Path(workdir) / ".stderr"
            status_read, status_write = os.pipe()
            env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-I",
                        "-B",
                        str(GUARD),
                        json.dumps(settings),
                        str(program_path),
                        str(status_write),
                    ],
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    pass_fds=(status_write,),
                    start_new_session=True,
                )
            os.close(status_write)
            timed_out = False
            try:
                process.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(process)
            isolation = _read_status(status_read)
            stdout, stdout_cut = _read_limited(out_path, limits.output_bytes)
            stderr, stderr_cut = _read_limited(err_path, limits.output_bytes)
        if process.returncode == NOT_ISOLATED_EXIT and self.isolate and not isolation.get("seccomp"):
            raise SandboxUnavailable(
                "cannot isolate model-written code on this machine (seccomp: "
                f"{isolation.get('seccomp_error', 'unavailable')}); the program was not run"
            )
        return SandboxResult(
            passed=process.returncode == 0 and not timed_out,
            returncode=process.returncode,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            memory_exceeded="MemoryError" in stderr,
            output_truncated=stdout_cut or stderr_cut,
            isolation=isolation,
            workdir=workdir,
        )


def _group_members_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (Linux: read /proc; elsewhere assume not)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):  # fields: state, ppid, pgrp, ...
            return True
    return False


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the program's whole process group (it may have left children) until none of it runs; reap it."""
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if process.poll() is not None and not _group_members_alive(process.pid):
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)


def _read_status(fd: int) -> dict:
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        data = b""
    finally:
        os.close(fd)
    try:
        return json.loads(data.decode("utf-8")) if data else {}
    except ValueError:
        return {}


def _read_limited(path: Path, limit: int) -> tuple[str, bool]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        data = f.read(limit)
    return data.decode("utf-8", errors="replace"), size >= limit
