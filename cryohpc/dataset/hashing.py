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

    @numba.njit(cache=True, nogil=True)
    def dedupe(words, size):
        n, width = words.shape
        mask = np.uint64(size - 1)
        first_of = np.full(size, -1, np.int64)
        code_of = np.zeros(size, np.int64)
        codes = np.empty(n, np.int64)
        firsts = np.empty(n, np.int64)
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
            h = np.uint64(0x9E3779B97F4A7C15)
            for c in range(width):
                h = mix(h ^ words[i, c])
            s = h & mask
            while True:
                j = first_of[s]
                if j < 0:
                    first_of[s] = i
                    code_of[s] = k
                    firsts[k] = i
                    codes[i] = k
                    k += 1
                    break
                equal = True
                for c in range(width):
                    if words[i, c] != words[j, c]:
                        equal = False
                        break
                if equal:
                    codes[i] = code_of[s]
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
    col = np.ascontiguousarray(col)
    width = col.dtype.itemsize
    rows = col.view(np.uint8).reshape(len(col), width)
    if width % 8:  # rows as whole 64-bit words: zero-pad them to a multiple of 8 bytes
        padded = np.zeros((len(col), -(-width // 8) * 8), np.uint8)
        padded[:, :width] = rows
        rows = padded
    return dedupe(rows.view(np.uint64), _table_size(len(col)))
