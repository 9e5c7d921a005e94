"""What one rank used, measured by the rank itself (every lane kind, with or without a
scheduler's accounting): wall and CPU time, peak memory, bytes read, GPU time and memory."""

from __future__ import annotations

import resource
import socket
import time
from pathlib import Path
from typing import Any


def _read_bytes() -> int:
    """Bytes this process read through read(2) and friends (cache and shared filesystem)."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pss_mb() -> float:
    """This process's proportional share of the memory it holds now: a page that k ranks
    (or libraries) share counts 1/k here, so ranks' figures add up to the node's use, which
    peak RSS, counting the node's shared accumulators once per rank that touched them,
    does not. 0 where the kernel does not say."""
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in text.splitlines() if line.startswith("Pss:")), 0.0)


class UsageMeter:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.gpu_since: float | None = None
        self.cache_copied_bytes = 0

    def gpu_bound(self) -> None:
        """From now on the rank holds a GPU."""
        self.gpu_since = self.gpu_since or time.monotonic()

    def figures(self, rank: int) -> dict[str, Any]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # an external program the worker ran
        wall = time.monotonic() - self.t0
        out = {
            "rank": rank, "host": socket.gethostname(), "wall_s": round(wall, 3),
            "cpu_s": round(own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime, 3),
            "max_rss_bytes": max(own.ru_maxrss, kids.ru_maxrss) * 1024, "read_bytes": _read_bytes(),
            "cache_copied_bytes": self.cache_copied_bytes,
        }
        if self.gpu_since is not None:
            out["gpu_s"] = round(time.monotonic() - self.gpu_since, 3)
            out["gpu_peak_bytes"] = _gpu_pool_bytes()
        return out


def _gpu_pool_bytes() -> int:
    """CuPy's pool keeps what it allocated: its size at the end is the rank's peak."""
    try:
        import cupy

        return int(cupy.get_default_memory_pool().total_bytes())
    except Exception:  # no CuPy, or no device left to ask
        return 0
