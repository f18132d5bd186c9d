"""The first code that runs in a sandboxed child: isolate the process, limit it, then run the program.

`sandbox.py` starts it as `python -I -B sandbox_guard.py SETTINGS_JSON PROGRAM STATUS_FD` in a new session,
with a throwaway folder as working directory and an almost empty environment. The interpreter runs
isolated (`-I`: no PYTHONPATH, no user site, not even this package), so this file uses the standard
library only. In order:

1. Kernel isolation, where Linux offers it (applied to this process and everything it could start):
   - Landlock (kernel >= 5.13): files can be created, written, renamed or deleted only inside the working
     folder; TCP connect/bind is refused (ABI >= 4); signals cannot reach processes outside the sandbox
     (ABI >= 6).
   - seccomp: the system calls that create processes (fork, vfork, clone without CLONE_THREAD; clone3 is
     answered "not implemented" so that threads fall back to clone), open sockets (socket, for every
     address family) or bypass both (io_uring, ptrace) fail with EPERM. A fork bomb therefore cannot
     fork and a network call fails at its first system call, whatever Python tricks the program uses.
2. Resource limits: address space and data segment (a 10 GB allocation raises MemoryError), CPU seconds,
   the size of any file written (stdout and stderr are files, so this is also the output limit), no
   core dumps, and no new processes for a non-root user (RLIMIT_NPROC; root ignores it, seccomp does not).
3. Python-level guards against accidents (os.system, os.kill, shutil.rmtree, ...): convenience only,
   trivially bypassed, which is why 1 and 2 come first.

What was applied is written as JSON to STATUS_FD, which is then closed, before the program runs; when the
settings require isolation and seccomp could not be installed, the program is not run at all.
"""

import ctypes
import json
import os
import platform
import resource
import struct
import sys


NOT_ISOLATED_EXIT = 97

# ---- seccomp

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM, ENOSYS = 1, 38
CLONE_THREAD = 0x00010000
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2

# Per architecture: the audit arch value and the system calls to refuse (None: absent on that arch).
SYSCALLS = {
    "x86_64": {
        "arch": 0xC000003E,
        "socket": 41,
        "fork": 57,
        "vfork": 58,
        "clone": 56,
        "clone3": 435,
        "io_uring_setup": 425,
        "ptrace": 101,
    },
    "aarch64": {
        "arch": 0xC00000B7,
        "socket": 198,
        "fork": None,
        "vfork": None,
        "clone": 220,
        "clone3": 435,
        "io_uring_setup": 425,
        "ptrace": 117,
    },
}
X32_SYSCALL_BIT = 0x40000000  # x86_64 also accepts x32 system call numbers: refuse them outright

# Classic BPF opcodes: load a 32-bit word of seccomp_data, compare, return.
BPF_LD_ABS_W, BPF_JEQ, BPF_JGE, BPF_JSET, BPF_RET = 0x20, 0x15, 0x35, 0x45, 0x06
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0 = 0, 4, 16


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def seccomp_program(numbers: dict) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions; jumps count instructions after the next one."""
    deny = SECCOMP_RET_ERRNO | EPERM
    program = [
        (BPF_LD_ABS_W, 0, 0, OFFSET_ARCH),
        (BPF_JEQ, 1, 0, numbers["arch"]),  # another ABI (e.g. i386 on x86_64): kill
        (BPF_RET, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (BPF_LD_ABS_W, 0, 0, OFFSET_NR),
    ]
    if numbers["arch"] == SYSCALLS["x86_64"]["arch"]:
        program += [(BPF_JGE, 0, 1, X32_SYSCALL_BIT), (BPF_RET, 0, 0, SECCOMP_RET_KILL_PROCESS)]
    refused = [("clone3", SECCOMP_RET_ERRNO | ENOSYS)]
    refused += [(name, deny) for name in ("socket", "fork", "vfork", "io_uring_setup", "ptrace")]
    for name, action in refused:
        if numbers[name] is not None:
            program += [(BPF_JEQ, 0, 1, numbers[name]), (BPF_RET, 0, 0, action)]
    # clone: threads (CLONE_THREAD set) are allowed, new processes are not.
    program += [
        (BPF_JEQ, 0, 4, numbers["clone"]),
        (BPF_LD_ABS_W, 0, 0, OFFSET_ARG0),
        (BPF_JSET, 0, 1, CLONE_THREAD),
        (BPF_RET, 0, 0, SECCOMP_RET_ALLOW),
        (BPF_RET, 0, 0, deny),
        (BPF_RET, 0, 0, SECCOMP_RET_ALLOW),
    ]
    return program


def install_seccomp(libc) -> str:
    numbers = SYSCALLS.get(platform.machine())
    if numbers is None:
        raise OSError(f"no seccomp filter for architecture {platform.machine()}")
    instructions = seccomp_program(numbers)
    filters = (SockFilter * len(instructions))(*[SockFilter(*ins) for ins in instructions])
    program = SockFprog(len(instructions), filters)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
    return f"{len(instructions)} instructions"


# ---- Landlock

LANDLOCK_CREATE_RULESET, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT_SELF = 444, 445, 446  # same on x86_64 and arm64
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
# Rights that change the file system, by the ABI version that introduced them.
WRITE_RIGHTS = {
    1: (1 << 1) | sum(1 << bit for bit in range(4, 13)),  # write file, remove dir/file, make char..symlink
    2: 1 << 13,  # refer (link/rename across folders)
    3: 1 << 14,  # truncate
    5: 1 << 15,  # ioctl on devices
}
NET_BIND_CONNECT_TCP = (1 << 0) | (1 << 1)  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET_AND_SIGNAL = (1 << 0) | (1 << 1)  # ABI 6


def install_landlock(libc, folder: str) -> str:
    abi = libc.syscall(LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    if abi < 1:
        raise OSError(ctypes.get_errno(), "Landlock is not available")
    fs_rights = sum(rights for version, rights in WRITE_RIGHTS.items() if abi >= version)
    net_rights = NET_BIND_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET_AND_SIGNAL if abi >= 6 else 0
    attr = struct.pack("=QQQ", fs_rights, net_rights, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    attr_buffer = ctypes.create_string_buffer(attr, len(attr))
    ruleset = libc.syscall(LANDLOCK_CREATE_RULESET, attr_buffer, len(attr), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    folder_fd = os.open(folder, os.O_PATH | os.O_CLOEXEC)
    rule = ctypes.create_string_buffer(struct.pack("=Qi", fs_rights, folder_fd), 12)  # packed struct
    if libc.syscall(LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, rule, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_add_rule failed")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.syscall(LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(folder_fd)
    os.close(ruleset)
    return f"ABI {abi}"


# ---- limits and Python-level guards


def set_limits(settings: dict) -> None:
    memory, output = settings["memory_bytes"], settings["output_bytes"]
    cpu = settings["cpu_seconds"]
    limits = [
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_DATA, memory),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, output),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, 0),
    ]
    for which, value in limits:
        if value is not None:
            resource.setrlimit(which, (value, value))


def disable_destructive_functions() -> None:
    import builtins
    import shutil
    import subprocess

    def refused(*args, **kwargs):
        raise PermissionError("disabled in the sandbox")

    names = "system kill killpg fork forkpty putenv unsetenv remove unlink rmdir removedirs rename renames replace"
    names += " truncate chmod chown lchown chroot setuid setgid execv execve spawnv spawnve posix_spawn"
    for name in names.split():
        if hasattr(os, name):
            setattr(os, name, refused)
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, refused)
    subprocess.Popen = refused
    builtins.exit = builtins.quit = builtins.help = None


def main() -> None:
    settings = json.loads(sys.argv[1])
    program_path, status_fd = sys.argv[2], int(sys.argv[3])
    with open(program_path, encoding="utf-8") as f:
        source = f.read()
    status = {}
    if settings["isolate"]:
        libc = ctypes.CDLL(None, use_errno=True)
        installers = {
            "landlock": lambda: install_landlock(libc, os.getcwd()),
            "seccomp": lambda: install_seccomp(libc),
        }
        for name, install in installers.items():
            try:
                status[name] = install()
            except (OSError, AttributeError) as err:
                status[name] = None
                status[f"{name}_error"] = str(err)
    set_limits(settings)
    with os.fdopen(status_fd, "w") as channel:
        json.dump(status, channel)
    if settings["isolate"] and settings["require_seccomp"] and not status.get("seccomp"):
        sys.exit(NOT_ISOLATED_EXIT)
    disable_destructive_functions()
    sys.argv = [program_path]
    code = compile(source, program_path, "exec")
    exec(code, {"__name__": "__main__", "__file__": program_path})


if __name__ == "__main__":
    main()
