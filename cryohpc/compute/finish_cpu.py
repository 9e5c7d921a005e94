"""Finishing a map on the CPU in compiled passes and a half-size inverse FFT.

The accumulator holds half-plane insertions on a centred grid with a margin. The weights'
pass forms W(k) = W(k) + W(-k) on the centred g³ grid (what :mod:`gridding` needs); the
data pass writes only the half spectrum a real inverse FFT reads (kx ≥ 0, FFT order),
Friedel-completed, times the sampling multiplier and the phase that puts the map's origin
at the grid centre ((-1)^(kx+ky+kz) on an even grid). A real inverse FFT (every core)
then does half the work of a complex one, with no shifted copies; the central box³ is
the map. The same arithmetic as :func:`backproject.add_friedel_mates` followed by a
centred complex inverse (the reference, ``use_kernel=False``), to float32 rounding.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba
import numpy as np
import scipy.fft
from numba import prange

from ..zeroed import zeroed
from .backproject import live_radius
from .gridding import sampling_multiplier


@numba.njit(cache=True, fastmath=True, parallel=True)
def _weights(a, b, use_b, g, live_radius, out):  # pragma: no cover - compiled
    c = a.shape[0] // 2
    h = g // 2
    for z in prange(g):
        for y in range(g):
            if (z - h) ** 2 + (y - h) ** 2 > live_radius * live_radius:
                # a row insertion never reached: left as the zero it is (``out`` is
                # zeroed), so neither its page in ``out`` nor, on shared memory, the
                # accumulator's is ever allocated
                continue
            for x in range(g):
                kz, ky, kx = z - h, y - h, x - h
                w = a[c + kz, c + ky, c + kx, 2] + a[c - kz, c - ky, c - kx, 2]
                if use_b:
                    w += b[c + kz, c + ky, c + kx, 2] + b[c - kz, c - ky, c - kx, 2]
                out[z, y, x] = w


@numba.njit(cache=True, fastmath=True, parallel=True)
def _half_spectrum(a, b, use_b, mult, g, out):  # pragma: no cover - compiled
    # ``mult`` is the half of the centred multiplier the spectrum reads (half_multiplier)
    c = a.shape[0] // 2
    h = g // 2
    last_positive = (g - 1) // 2  # FFT order: indices beyond it hold negative frequencies
    odd = g % 2
    for iz in prange(g):
        kz = iz - g * (iz > last_positive)
        mz = (h - kz) % g  # centred index of -kz: where kx = +g/2 reads the multiplier of -k
        for iy in range(g):
            ky = iy - g * (iy > last_positive)
            my = (h - ky) % g
            for kx in range(g // 2 + 1):
                m = mult[kz + h, ky + h, kx] if kx + h < g else mult[mz, my, kx]
                if m == 0.0:
                    out[iz, iy, kx] = 0.0
                    continue
                re = a[c + kz, c + ky, c + kx, 0] + a[c - kz, c - ky, c - kx, 0]
                im = a[c + kz, c + ky, c + kx, 1] - a[c - kz, c - ky, c - kx, 1]
                if use_b:
                    re += b[c + kz, c + ky, c + kx, 0] + b[c - kz, c - ky, c - kx, 0]
                    im += b[c + kz, c + ky, c + kx, 1] - b[c - kz, c - ky, c - kx, 1]
                if odd:  # the origin moves to index h by the phase exp(-2πi k·h / g)
                    t = -2.0 * np.pi * ((kx + ky + kz) * h % g) / g
                    pr, pi = np.cos(t), np.sin(t)
                    out[iz, iy, kx] = complex((re * pr - im * pi) * m, (re * pi + im * pr) * m)
                    continue
                if (kx + ky + kz) & 1:  # an even grid's shift by g/2 is the sign (-1)^k
                    m = -m
                out[iz, iy, kx] = complex(re * m, im * m)


def weights(acc: np.ndarray, other: np.ndarray | None, g: int) -> np.ndarray:
    """W(k) + W(-k) of ``acc`` (+ ``other``) on the centred g³ grid."""
    out = zeroed((g, g, g))
    _weights(acc, acc if other is None else other, other is not None, g, live_radius(g), out)
    return out


def half_multiplier(mult: np.ndarray) -> np.ndarray:
    """The columns of the centred g³ multiplier that the half spectrum (kx = 0 .. g//2)
    reads: kx = 0 .. ⌈g/2⌉-1, then, for an even grid, the column of kx = -g/2, which holds
    the multiplier of -k where kx = +g/2 (not on the centred grid)."""
    g = mult.shape[0]
    h = g // 2
    out = np.empty((g, g, g // 2 + 1), np.float32)
    out[:, :, : g - h] = mult[:, :, h:]
    if g - h < g // 2 + 1:
        out[:, :, g - h] = mult[:, :, 0]
    return out


def real_map(acc: np.ndarray, other: np.ndarray | None, g: int, box: int, iterations: int,
             wiener: float, threads: int | None = None) -> np.ndarray:
    """The centred box³ real-space map of ``acc`` (+ ``other``).

    Memory beyond the accumulator is at most the rows of two g³ grids that cross the ball
    (the weights and the multiplier), then the half of the multiplier the spectrum reads
    and the half spectrum: box 128, 101 MB, against 131 MB with every page of both grids.
    The inverse FFT runs in place axis by axis, each axis only over the lines the central
    box needs (all of z, half of the planes along y, a quarter of the rows along x), so no
    g³ output is ever allocated and two thirds of the last two axes' work is skipped.

    ``threads``: how many cores the compiled passes and the FFTs use (all by default),
    for a map finished beside another rank's on the same node.
    """
    with limited_threads(threads):
        return _real_map(acc, other, g, box, iterations, wiener, threads or -1)


@contextmanager
def limited_threads(threads: int | None):
    """numba's parallel loops launched from this thread use at most ``threads`` cores."""
    if threads is None:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _real_map(acc: np.ndarray, other: np.ndarray | None, g: int, box: int, iterations: int, wiener: float,
              workers: int) -> np.ndarray:
    mult = half_multiplier(sampling_multiplier(np, weights(acc, other, g), iterations, wiener))
    half = np.empty((g, g, g // 2 + 1), np.complex64)
    _half_spectrum(acc, acc if other is None else other, other is not None, mult, g, half)
    del mult
    lo = g // 2 - box // 2
    scipy.fft.ifft(half, axis=0, overwrite_x=True, workers=workers)
    planes = half[lo:lo + box]  # contiguous: transformed in place
    scipy.fft.ifft(planes, axis=1, overwrite_x=True, workers=workers)
    vol = scipy.fft.irfft(planes[:, lo:lo + box], n=g, axis=2, workers=workers)
    return np.ascontiguousarray(vol[:, :, lo:lo + box])
