"""Child processes that cannot outlive the run that started them.

A child (``fairseq-preprocess``) runs in its own process group. It asks the kernel to kill it when
its parent dies (``PR_SET_PDEATHSIG``, Linux), and so does every process it forks (fairseq's
binarizer pool), so that ``kill -9`` of the pipeline leaves nothing writing into the output
directory. The parent ends the whole group on any exception or interrupt, and records the group
in a pid file so that the next run can end a group that survived anyway (a non-Linux system).
Workers of our own multiprocessing pools call :func:`die_with_parent` as their initializer.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List, Sequence

PR_SET_PDEATHSIG = 1
# Marks the command line of our children, so that a leftover group is ended only if it is ours.
CHILD_MARK = "data_prep child"

# Runs in the child as ``python -c``: the death signal for itself and for whatever it forks, then
# the module as __main__ (the parent's pid and the module name come first in argv).
_LAUNCHER = f"""# {CHILD_MARK}
import ctypes, os, runpy, signal, sys
def guard(parent):
    try:
        ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)
guard(int(sys.argv[1]))
forker = [os.getpid()]
os.register_at_fork(before=lambda: forker.__setitem__(0, os.getpid()), after_in_child=lambda: guard(forker[0]))
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def die_with_parent(parent: int) -> None:
    """In a child process: be killed when ``parent`` dies, and exit now if it already has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: the parent's cleanup still ends the child
    if os.getppid() != parent:
        os._exit(1)


def start_module(module: str, args: Sequence[str], pid_file: Path, **popen: Any) -> "subprocess.Popen[bytes]":
    """Run ``python -m module args`` in its own process group, dying with us; records the group."""
    end_leftover_group(pid_file)
    cmd = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), module, *args]
    proc = subprocess.Popen(cmd, start_new_session=True, **popen)
    pid_file.write_text(f"{proc.pid}\n", encoding="utf-8")
    return proc


def end_group(proc: "subprocess.Popen[bytes]", pid_file: Path) -> None:
    """Kill the child's whole process group (a no-op once it is empty) and reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    pid_file.unlink(missing_ok=True)


def _members(pgid: int) -> List[int]:
    """Processes in group ``pgid`` whose command line carries our mark (Linux /proc)."""
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and CHILD_MARK.encode() in cmdline and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def end_leftover_group(pid_file: Path, timeout: float = 10.0) -> None:
    """End a child group recorded by an earlier run that was killed, before its files are touched."""
    try:
        pgid = int(pid_file.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        pid_file.unlink(missing_ok=True)
        return
    deadline = time.monotonic() + timeout
    while True:
        members = _members(pgid)
        if not members:
            break
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
