"""One place to choose the array module: CuPy on a usable GPU, NumPy otherwise.

``CRYOHPC_BACKEND=numpy|cupy`` forces a choice (cupy then fails loudly if unusable).
"""

from __future__ import annotations

import os
from functools import lru_cache
from types import ModuleType
from typing import Any

import numpy as np


@lru_cache(maxsize=1)
def cupy_usable() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDA driver errors of many kinds
        return False


def get_xp(prefer: str | None = None) -> ModuleType:
    """The array module to compute with."""
    choice = (prefer or os.environ.get("CRYOHPC_BACKEND") or "auto").lower()
    if choice == "numpy":
        return np
    if choice == "cupy" or (choice == "auto" and cupy_usable()):
        import cupy

        return cupy
    return np


def to_numpy(a: Any) -> np.ndarray:
    """A host copy of an array of either module."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def backend_name(xp: ModuleType) -> str:
    return "cupy" if xp is not np else "numpy"


def use_device(local_rank: int) -> int | None:
    """Bind this process to GPU ``local_rank`` modulo the visible ones; None without CuPy."""
    if not cupy_usable():
        return None
    import cupy

    n = cupy.cuda.runtime.getDeviceCount()
    dev = local_rank % n
    cupy.cuda.Device(dev).use()
    return dev
