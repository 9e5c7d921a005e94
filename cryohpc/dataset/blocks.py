"""Copying fields of a structured (row-major) array a block of rows at a time.

Copying one field of a row-major array reads every row's cache lines, so copying k
fields one after the other reads the whole array k times. Copying all k fields of a
block of rows while it sits in cache reads it once: 1M particle rows of 11 fields split
into columns in 25 ms instead of 40. Large copies run on several threads, each over its
own rows (numpy releases the GIL while it copies): 18.5 ms -> 9.8 ms on 2 cores.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# ~100-byte particle rows: a block stays in L2
BLOCK_ROWS = 8192
THREAD_ROWS = 4 * BLOCK_ROWS  # fewer rows a thread are not worth starting it
MAX_THREADS = 4


def copy_fields(src: np.ndarray, dst: np.ndarray | Mapping[str, np.ndarray], names: Iterable[str],
                start: int = 0) -> None:
    """``dst[name][start:start + len(src)] = src[name]`` for every name, block by block.

    ``dst`` is a structured array or one array per field.
    """
    names = list(names)
    threads = min(os.cpu_count() or 1, MAX_THREADS, len(src) // THREAD_ROWS)
    if threads <= 1:
        _copy_rows(src, dst, names, start, 0, len(src))
        return
    edges = np.linspace(0, len(src), threads + 1).astype(int)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="copy-fields") as pool:
        list(pool.map(lambda i: _copy_rows(src, dst, names, start, edges[i], edges[i + 1]), range(threads)))


def _copy_rows(src: np.ndarray, dst: np.ndarray | Mapping[str, np.ndarray], names: list[str], start: int,
               lo: int, hi: int) -> None:
    for a in range(lo, hi, BLOCK_ROWS):
        block = src[a : min(a + BLOCK_ROWS, hi)]
        rows = slice(start + a, start + a + len(block))
        for name in names:
            dst[name][rows] = block[name]


def packed_dtype(dtype: np.dtype) -> np.dtype:
    """The same fields in the same order, with no gaps between them: what a numpy-format
    file and every peer expect (a view over some fields of wider rows has gaps)."""
    return np.dtype([(name, dtype[name]) for name in dtype.names])


def packed(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself when its rows have no gaps, else a copy whose rows have none."""
    want = packed_dtype(arr.dtype)
    return arr if arr.dtype == want else _copied_into(arr, want)


def packed_copy(arr: np.ndarray) -> np.ndarray:
    """A private, writable copy of ``arr`` with gap-free rows."""
    want = packed_dtype(arr.dtype)
    return np.array(arr, subok=False) if arr.dtype == want else _copied_into(arr, want)


def _copied_into(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    out = np.empty(arr.shape, dtype=dtype)
    copy_fields(arr, out, dtype.names)
    return out
