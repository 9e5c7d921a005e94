"""How many threads the NumPy path's parallel parts use: numba's parallel loops and
scipy.fft's workers. All the process's cores by default; a share of them while several
ranks of a node compute at once, so they do not oversubscribe the node."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

FFT_WORKERS = {"n": -1}  # scipy.fft's ``workers``: -1 is every core


def fft_workers() -> int:
    return FFT_WORKERS["n"]


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def cores_shared(ways: int) -> Iterator[int]:
    """Inside the block, numba and scipy.fft use cores() // ways threads (at least one)."""
    import numba

    share = max(1, cores() // max(1, ways))
    before_fft, before_numba = FFT_WORKERS["n"], numba.get_num_threads()
    FFT_WORKERS["n"] = share
    numba.set_num_threads(min(share, numba.config.NUMBA_NUM_THREADS))
    try:
        yield share
    finally:
        FFT_WORKERS["n"] = before_fft
        numba.set_num_threads(before_numba)
