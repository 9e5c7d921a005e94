"""Hash tables in compiled loops for the two operations that sort large datasets:
matching uids (inner joins) and telling string values apart (CSDAT's string heap).

Sorting 1M keys costs ~80 ms here; one pass that builds a table and one that probes it
cost ~10. Exact: a slot is claimed by a whole key or row, never by its hash alone. numba
is imported on first use, so reading small datasets (every CLI command) does not pay for it.
"""

from __future__ import annotations

from functools import cache

import numpy as np

LARGE = 50_000  # below this many rows the sorting paths are as fast
_INITIAL_TABLE = 1024  # slots a string table starts with; it doubles as needed


def _table_size(n: int) -> int:
    return 1 << max(4, int(2 * n - 1).bit_length())  # load factor <= 1/2


@cache
def _kernels():
    import numba

    @numba.njit(cache=True, nogil=True)
    def mix(k):
        k ^= k >> np.uint64(33)
        k *= np.uint64(0xFF51AFD7ED558CCD)
        k ^= k >> np.uint64(33)
        return k

    @numba.njit(cache=True, nogil=True)
    def match(a, b, size):
        mask = np.uint64(size - 1)
        keys = np.zeros(size, np.uint64)
        slot_of = np.full(size, -1, np.int64)
        for j in range(b.shape[0]):
            s = mix(b[j]) & mask
            while slot_of[s] >= 0 and keys[s] != b[j]:
                s = (s + np.uint64(1)) & mask
            keys[s] = b[j]
            slot_of[s] = j
        partner = np.full(a.shape[0], -1, np.int64)
        for i in range(a.shape[0]):
            s = mix(a[i]) & mask
            while slot_of[s] >= 0:
                if keys[s] == a[i]:
                    partner[i] = slot_of[s]
                    break
                s = (s + np.uint64(1)) & mask
        return partner

    @numba.njit(cache=True, nogil=True, inline="always")
    def row_hash(words, i):
        h = np.uint64(0x9E3779B97F4A7C15)
        for c in range(words.shape[1]):
            h = (h ^ words[i, c]) * np.uint64(0x100000001B3)
        return mix(h)

    @numba.njit(cache=True, nogil=True)
    def dedupe(words, size):
        # The table holds codes (indexes into ``firsts``) and starts small, doubling as
        # distinct rows arrive: a column of a few thousand stacks never allocates (and
        # page-faults) a table sized for every row.
        n, width = words.shape
        code_at = np.full(size, -1, np.int64)
        codes = np.empty(n, np.int64)
        firsts = np.empty(size // 2, np.int64)
        k = 0
        for i in range(n):
            if i > 0:  # a run of equal rows (a stack's particles) costs one comparison each
                same = True
                for c in range(width):
                    if words[i, c] != words[i - 1, c]:
                        same = False
                        break
                if same:
                    codes[i] = codes[i - 1]
                    continue
            mask = np.uint64(code_at.shape[0] - 1)
            s = row_hash(words, i) & mask
            while True:
                j = code_at[s]
                if j < 0:  # a new value
                    code_at[s] = k
                    firsts[k] = i
                    codes[i] = k
                    k += 1
                    if 2 * k >= code_at.shape[0]:  # keep the load factor at most 1/2
                        grown = code_at.shape[0] * 2
                        code_at = np.full(grown, -1, np.int64)
                        grown_mask = np.uint64(grown - 1)
                        for m in range(k):
                            t = row_hash(words, firsts[m]) & grown_mask
                            while code_at[t] >= 0:
                                t = (t + np.uint64(1)) & grown_mask
                            code_at[t] = m
                        more = np.empty(grown // 2, np.int64)
                        more[:k] = firsts[:k]
                        firsts = more
                    break
                first = firsts[j]
                equal = True
                for c in range(width):
                    if words[i, c] != words[first, c]:
                        equal = False
                        break
                if equal:
                    codes[i] = j
                    break
                s = (s + np.uint64(1)) & mask
        return codes, firsts[:k]

    return match, dedupe


def match_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of ``a``'s uint64 keys, the index of the equal key of ``b`` (unique), or -1."""
    match, _ = _kernels()
    return match(np.ascontiguousarray(a, np.uint64), np.ascontiguousarray(b, np.uint64), _table_size(len(b)))


def dedupe_rows(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of a fixed-width bytes column (equal rows, equal codes; in order of first
    appearance) and the first row of each code."""
    _, dedupe = _kernels()
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
