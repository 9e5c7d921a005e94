"""Finishing a map on the CPU in two compiled passes and a half-size inverse FFT.

The accumulator holds half-plane insertions on a centred grid with a margin. The weights'
pass forms W(k) = W(k) + W(-k) on the centred g³ grid (what :mod:`gridding` needs); the
data pass writes only the half spectrum a real inverse FFT reads (kx ≥ 0, FFT order),
Friedel-completed, times the sampling multiplier and (-1)^(kx+ky+kz), which puts the
map's origin at the grid centre. ``irfftn`` (every core) then does half the work of a
complex inverse FFT, with no shifted copies; the central box³ is the map. The same arithmetic as
:func:`backproject.add_friedel_mates` followed by a centred complex inverse (the reference,
``use_kernel=False``), to float32 rounding.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.fft
from numba import prange


@numba.njit(cache=True, fastmath=True, parallel=True)
def _weights(a, b, use_b, g, out):  # pragma: no cover - compiled
    c = a.shape[0] // 2
    h = g // 2
    for z in prange(g):
        for y in range(g):
            for x in range(g):
                kz, ky, kx = z - h, y - h, x - h
                w = a[c + kz, c + ky, c + kx, 2] + a[c - kz, c - ky, c - kx, 2]
                if use_b:
                    w += b[c + kz, c + ky, c + kx, 2] + b[c - kz, c - ky, c - kx, 2]
                out[z, y, x] = w


@numba.njit(cache=True, fastmath=True, parallel=True)
def _half_spectrum(a, b, use_b, mult, g, out):  # pragma: no cover - compiled
    c = a.shape[0] // 2
    h = g // 2
    for iz in prange(g):
        kz = iz - g * (iz >= h)
        mz = (h - kz) % g  # centred index of -kz: where kx = +g/2 reads the multiplier of -k
        for iy in range(g):
            ky = iy - g * (iy >= h)
            my = (h - ky) % g
            for kx in range(h + 1):
                m = mult[kz + h, ky + h, kx + h] if kx < h else mult[mz, my, 0]
                if m == 0.0:
                    out[iz, iy, kx] = 0.0
                    continue
                re = a[c + kz, c + ky, c + kx, 0] + a[c - kz, c - ky, c - kx, 0]
                im = a[c + kz, c + ky, c + kx, 1] - a[c - kz, c - ky, c - kx, 1]
                if use_b:
                    re += b[c + kz, c + ky, c + kx, 0] + b[c - kz, c - ky, c - kx, 0]
                    im += b[c + kz, c + ky, c + kx, 1] - b[c - kz, c - ky, c - kx, 1]
                if (kx + ky + kz) & 1:
                    m = -m
                out[iz, iy, kx] = complex(re * m, im * m)


def weights(acc: np.ndarray, other: np.ndarray | None, g: int) -> np.ndarray:
    """W(k) + W(-k) of ``acc`` (+ ``other``) on the centred g³ grid."""
    out = np.empty((g, g, g), np.float32)
    _weights(acc, acc if other is None else other, other is not None, g, out)
    return out


def real_map(acc: np.ndarray, other: np.ndarray | None, mult: np.ndarray, g: int, box: int) -> np.ndarray:
    """The centred box³ real-space map of ``acc`` (+ ``other``) times ``mult`` (centred g³)."""
    half = np.empty((g, g, g // 2 + 1), np.complex64)
    _half_spectrum(acc, acc if other is None else other, other is not None, mult, g, half)
    vol = scipy.fft.irfftn(half, s=(g, g, g), workers=-1, overwrite_x=True)
    lo = g // 2 - box // 2
    return np.ascontiguousarray(vol[lo:lo + box, lo:lo + box, lo:lo + box])
