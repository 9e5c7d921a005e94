"""The compiled loops behind :mod:`hashing`, at module level.

numba caches a compiled function on disk only when it can tell it is the same function
in the next process; functions defined inside another function (and calling each other
through its closure) were compiled afresh in every process, 0.7-2.4 s on the first join
or CSDAT save of a large dataset. Importing this module imports numba, so
:mod:`hashing` imports it on first use.
"""

from __future__ import annotations

import numba
import numpy as np


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
