"""The HumanEval sandbox: off unless enabled, and hostile programs are stopped and leave nothing behind.

The "fork bomb" is bounded (at most 2^6 processes, each sleeping) so that a failing protection cannot take
the test machine down; the test then checks that no process of the program survives its run.
"""

import os
import socket
import sys
from pathlib import Path

import pytest

from nanochat_hf.eval.sandbox import CodeExecutionDisabled, Sandbox, SandboxLimits


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox's isolation is Linux-only")

FORK_BOMB = """
import posix, time
for _ in range(6):
    posix.fork()  # posix.fork, not os.fork: the Python-level guard must not be what stops it
time.sleep(60)
"""


def survivors(workdir: str) -> list[int]:
    """Processes whose command line names the sandbox folder (forked children keep the parent's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if workdir.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(enabled=True, limits=SandboxLimits(timeout_s=2.0))


def test_nothing_runs_unless_enabled(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(CodeExecutionDisabled, match="--allow-code-execution"):
        Sandbox().run(f"open({str(marker)!r}, 'w').write('x')")
    assert not marker.exists()


def test_a_passing_and_a_failing_program(sandbox):
    ok = sandbox.run("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('fine')")
    assert ok.passed and ok.stdout == "fine\n" and ok.error is None
    assert ok.isolation.get("seccomp"), ok.isolation  # this machine supports the kernel isolation
    failed = sandbox.run("assert 1 + 1 == 3")
    assert not failed.passed and failed.error == "AssertionError"
    assert not Path(ok.workdir).exists()  # the throwaway folder is gone


def test_infinite_loop_is_killed(sandbox):
    result = sandbox.run("while True:\n    pass")
    assert result.timed_out and not result.passed and result.returncode == -9
    assert survivors(result.workdir) == []


def test_fork_bomb_cannot_fork(sandbox):
    result = sandbox.run(FORK_BOMB)
    assert not result.passed and "PermissionError" in result.stderr, result.stderr
    assert survivors(result.workdir) == []


def test_fork_bomb_children_are_killed_with_the_process_group():
    """Without the kernel isolation the bounded bomb forks (as root; RLIMIT_NPROC stops it for other users),
    and the timeout kills the whole process group."""
    result = Sandbox(enabled=True, limits=SandboxLimits(timeout_s=2.0), isolate=False, require_isolation=False).run(
        FORK_BOMB
    )
    assert not result.passed
    assert result.timed_out or os.geteuid() != 0
    assert survivors(result.workdir) == []


def test_ten_gigabyte_allocation_fails(sandbox):
    result = sandbox.run("block = bytearray(10 * 1024**3)\nblock[-1] = 1")
    assert not result.passed and result.memory_exceeded and result.error == "MemoryError"


@pytest.mark.parametrize(
    "connect",
    [
        "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=2)",
        "import _socket\ns = _socket.socket(2, 1)\ns.connect(('127.0.0.1', PORT))",  # below the socket module
    ],
)
def test_network_call_fails_and_reaches_nobody(sandbox, connect):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    try:
        result = sandbox.run(connect.replace("PORT", str(server.getsockname()[1])))
        assert not result.passed and "Operation not permitted" in result.stderr, result.stderr
        with pytest.raises(BlockingIOError):
            server.accept()  # no connection ever arrived
    finally:
        server.close()


def test_output_is_limited(sandbox):
    result = Sandbox(enabled=True, limits=SandboxLimits(timeout_s=5.0, output_bytes=4096)).run(
        "while True: print('x' * 100)"
    )
    assert result.output_truncated and not result.passed and len(result.stdout) <= 4096


def test_files_outside_the_throwaway_folder_cannot_be_written(sandbox, tmp_path):
    target = tmp_path / "outside.txt"
    result = sandbox.run(f"open('inside.txt', 'w').write('ok')\nopen({str(target)!r}, 'w').write('x')")
    if not result.isolation.get("landlock"):
        pytest.skip(f"Landlock unavailable here: {result.isolation.get('landlock_error')}")
    assert not result.passed and "Permission denied" in result.stderr
    assert not target.exists()
    assert os.path.exists(tmp_path)  # untouched
