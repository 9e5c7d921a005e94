"""Hash tables in compiled loops for the two operations that sort large datasets:
matching uids (inner joins) and telling string values apart (CSDAT's string heap).

Sorting 1M keys costs ~80 ms here; one pass that builds a table and one that probes it
cost ~10. Exact: a slot is claimed by a whole key or row, never by its hash alone. numba
is imported on first use, so reading small datasets (every CLI command) does not pay for it.
"""

from __future__ import annotations

import numpy as np

LARGE = 50_000  # below this many rows the sorting paths are as fast
_INITIAL_TABLE = 1024  # slots a string table starts with; it doubles as needed


def _table_size(n: int) -> int:
    return 1 << max(4, int(2 * n - 1).bit_length())  # load factor <= 1/2


def match_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of ``a``'s uint64 keys, the index of the equal key of ``b`` (unique), or -1."""
    from .hash_kernels import match

    return match(np.ascontiguousarray(a, np.uint64), np.ascontiguousarray(b, np.uint64), _table_size(len(b)))


def dedupe_rows(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of a fixed-width bytes column (equal rows, equal codes; in order of first
    appearance) and the first row of each code."""
    from .hash_kernels import dedupe

    return dedupe(row_words(col), _INITIAL_TABLE)


class _Interface:
    """Holds an array interface (and the array it points into) for ``np.asarray``."""

    def __init__(self, interface: dict, owner: np.ndarray):
        self.__array_interface__ = interface
        self.owner = owner


def row_words(col: np.ndarray) -> np.ndarray:
    """The column's rows as 64-bit words, shape (rows, words).

    A field of a structured array is read in place (unaligned, strided) when its width is
    whole words; copying a 40-byte path field of 1M rows first would cost more than
    telling its values apart.
    """
    n, width = len(col), col.dtype.itemsize
    if width % 8 == 0 and width:
        interface = {"shape": (n, width // 8), "typestr": "<u8", "version": 3,
                     "data": (col.__array_interface__["data"][0], True), "strides": (col.strides[0], 8)}
        return np.asarray(_Interface(interface, col))
    # zero-pad each row to whole words
    padded = np.zeros((n, -(-width // 8) * 8), np.uint8)
    padded[:, :width] = np.ascontiguousarray(col).view(np.uint8).reshape(n, width)
    return padded.view(np.uint64)
