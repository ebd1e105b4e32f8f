"""Processes the local harness started: spawn detached, poll with deadlines, stop by PID.

Network-safety rule of DESIGN.md section 7: we end only processes we started, by PID. A PID
recorded in a cluster file may have been reused by an unrelated process after a reboot or a
crash, so before signalling we check that the process's command line still contains a marker
only our processes carry (the absolute path of the cluster's own directory).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sonic.polling import backoff

# SIGTERM grace before SIGKILL: agents stop their worker pools on SIGTERM, which takes well
# under a second; 5 s leaves room on a loaded CI machine without making `down` feel stuck.
DEFAULT_STOP_TIMEOUT_S = 5.0

# Popen objects of the children we spawned, by PID: polling them reaps the child and keeps
# subprocess from warning about a "still running" process when the object is collected.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our child, so it does not linger as a zombie."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
        return
    # ChildProcessError: not our child (started by an earlier `sonic` process or via sshd);
    # then its parent or init reaps it.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a zombie has exited; only its entry remains)."""
    if pid <= 0:
        return False
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    """The command line of ``pid`` with NULs as spaces, or "" if it is gone or unreadable."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def is_ours(pid: int, marker: str) -> bool:
    """Alive and its command line carries ``marker`` (guards against PID reuse). An empty
    marker matches nothing: without one we cannot tell our process from a stranger's."""
    return bool(marker) and pid_alive(pid) and marker in cmdline(pid)


def stop_pid(pid: int, marker: str, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
    """SIGTERM ``pid`` if it is ours, wait up to ``timeout_s``, then SIGKILL.

    Returns True if a process of ours was running and is now gone, False if there was nothing
    of ours to stop (already gone, or the PID now belongs to someone else).
    """
    if not is_ours(pid, marker):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    for _ in backoff(time.monotonic() + timeout_s):
        if not pid_alive(pid):
            return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    # SIGKILL cannot be ignored; the short wait only covers the kernel tearing the process down.
    for _ in backoff(time.monotonic() + DEFAULT_STOP_TIMEOUT_S):
        if not pid_alive(pid):
            return True
    return not pid_alive(pid)


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached from our terminal: its own session (so a Ctrl-C aimed at the
    harness does not kill it behind the harness's back: the harness tears down in order),
    stdin from /dev/null, stdout+stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            close_fds=True,
        )
    _children[child.pid] = child
    return child


def tail(path: Path, max_bytes: int = 2000) -> str:
    """The last ``max_bytes`` of a log file, for error messages ("" if there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode(errors="replace").strip()
    except FileNotFoundError:
        return ""


def session_members(sid: int) -> list[int]:
    """Live PIDs whose session id is ``sid``: the descendants of a session leader we started
    (agents run their worker processes in their own session)."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        # After the command name: state, ppid, pgrp, session, ...
        if len(fields) > 3 and fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def cwd_under(pid: int, root: str) -> bool:
    """Does ``pid`` run inside directory ``root``? Agents run in their data directory and
    their workers inherit it, which marks them as ours even though their command lines do not
    carry the cluster's directory (and even after their agent was killed)."""
    if not root:
        return False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    cwd = cwd.removesuffix(" (deleted)")
    return cwd == root or cwd.startswith(root.rstrip(os.sep) + os.sep)


def stop_session(sid: int, timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
                 owned: Callable[[int], bool] | None = None) -> list[int]:
    """Stop what is left of a session whose leader has exited: worker processes orphaned by a
    SIGKILLed agent. With ``owned``, only members it accepts are signalled (needed when the
    leader can no longer be verified as ours). Returns the PIDs that were signalled."""
    left = [pid for pid in session_members(sid) if pid != os.getpid() and (owned is None or owned(pid))]
    for pid in left:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for _ in backoff(time.monotonic() + timeout_s):
        if not any(pid_alive(pid) for pid in left):
            return left
    for pid in left:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
    return left
