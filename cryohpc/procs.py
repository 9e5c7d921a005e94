"""Process groups on this machine, trusted only with their start time (against PID reuse).

Used by the local lane directly and, on a remote worker target, by
``cryohpc.worker.detach`` on the master's behalf.
"""

from __future__ import annotations

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


def kill_group(pgid: int, start_ticks: int | None, grace_s: float = KILL_GRACE_S,
               reap: Callable[[], None] | None = None) -> bool:
    """SIGTERM the whole process group, SIGKILL what remains after ``grace_s``.

    ``reap`` lets a parent collect its child meanwhile (a zombie child never looks gone
    to the caller otherwise). Returns True once the group leader is gone.
    """
    if not is_alive(pgid, start_ticks):
        return True
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
            os.killpg(pgid, signal.SIGCONT)  # a stopped process only acts on SIGTERM once resumed
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and is_alive(pgid, start_ticks):
            if reap is not None:
                reap()
            time.sleep(0.05)
        if not is_alive(pgid, start_ticks):
            return True
    return not is_alive(pgid, start_ticks)
