"""Process groups on this machine, trusted only with their start time (against PID reuse).

Used by the local lane directly and, on a remote worker target, by
``cryohpc.worker.detach`` on the master's behalf.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

KILL_GRACE_S = 5.0


def process_start_ticks(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks since boot, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(pid: int | None, start_ticks: int | None) -> bool:
    """The process ``pid`` still runs and is the one started at ``start_ticks``."""
    if pid is None:
        return False
    ticks = process_start_ticks(pid)
    return ticks is not None and (start_ticks is None or ticks == start_ticks)


def descendants(pid: int) -> dict[int, int]:
    """Every live process below ``pid`` (children, theirs...), with its start time. MPI
    launchers may put ranks in process groups of their own, so a group kill alone can
    miss them once the launcher itself is gone."""
    parent_of: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            parent_of[int(entry.name)] = int(fields[1])
            ticks[int(entry.name)] = int(fields[19])
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parent_of.items():
            if ppid == parent and child not in found:
                found[child] = ticks[child]
                frontier.append(child)
    return found


def kill_group(pgid: int, start_ticks: int | None, grace_s: float = KILL_GRACE_S,
               reap: Callable[[], None] | None = None) -> bool:
    """SIGTERM the process group and every descendant of its leader, SIGKILL what
    remains after ``grace_s``.

    ``reap`` lets a parent collect its child meanwhile (a zombie child never looks gone
    to the caller otherwise). Returns True once the leader and its descendants are gone.
    """
    if not is_alive(pgid, start_ticks):
        return True
    tree = descendants(pgid)

    def remaining() -> list[int]:
        left = [p for p, t in tree.items() if is_alive(p, t)]
        return [pgid, *left] if is_alive(pgid, start_ticks) else left

    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
            os.killpg(pgid, signal.SIGCONT)  # a stopped process only acts on SIGTERM once resumed
        for pid in remaining():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and remaining():
            if reap is not None:
                reap()
            time.sleep(0.05)
        if not remaining():
            return True
    return not remaining()
