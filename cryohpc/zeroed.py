"""Large zeroed arrays whose memory is taken 4 KB page by 4 KB page, as it is first written.

``np.zeros`` of a large array gets a region numpy marks for 2 MB pages, and one write
anywhere in 2 MB brings in all of it. A reconstruction's grids are written only along the
rows that cross a ball (three quarters of the cube); on 4 KB pages the rows nothing writes
never cost memory, and reading them maps the kernel's shared zero page, which costs none.
"""

from __future__ import annotations

import mmap

import numpy as np
from numpy.typing import DTypeLike


def zeroed(shape: tuple[int, ...], dtype: DTypeLike = np.float32) -> np.ndarray:
    """A writable zero-filled C-ordered array on private anonymous memory, small pages."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        return np.zeros(shape, dtype)
    try:
        region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError as err:  # as np.zeros would say it
        raise MemoryError(f"cannot reserve {nbytes / 2**20:.0f} MiB for a {shape} grid ({err.strerror})") from err
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # where the kernel gives 2 MB pages unasked
        region.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(region, dtype).reshape(shape)  # the array keeps the mapping alive
