"""Iterative estimation of the Fourier-space sampling weights (Pipe & Menon 1999; what
RELION's ``--iter`` does, 10 iterations by default).

Dividing the accumulated data N by the accumulated weights W voxel by voxel is exact for a
noise-free, smoothly sampled grid; where the sampling is uneven or sparse (few particles,
preferred views, the shell just inside Nyquist) the iterated weights w, which make the
kernel-smoothed sampling density (w·W) ∗ K flat, are the better estimate of 1/W. Zero
iterations keep the direct division N / (W + λ).

The kernel K is separable: three taps [t, 1, t] per axis, t = 0.115, the value at one
voxel of a Kaiser-Bessel blob of radius 1.9 voxels and α = 15 (the gridding blob RELION
uses); its product is within 0.01 of the blob at every other stencil point. A separable
stencil costs 9 reads a voxel instead of two FFTs of the padded grid per iteration.
Weights are normalised by their median first, so the regularisation λ (``wiener``) means
the same in both modes: no voxel's multiplier exceeds 1 / (λ · the weights' median).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from ..zeroed import zeroed

TAP = 0.115
NORM = (1 + 2 * TAP) ** 3  # the stencil sums to 1 after this division

try:
    import numba
    from numba import prange

    @numba.njit(cache=True, fastmath=True, nogil=True, inline="always")
    def _row_span(z, y, c, radius, g):  # pragma: no cover - compiled
        """x-range [lo, hi) of row (z, y) that can hold points within ``radius`` of the
        centre (one voxel of slack on each side); empty beyond it."""
        h2 = radius * radius - (z - c) ** 2 - (y - c) ** 2
        if h2 < 0:
            return 0, 0
        h = int(np.sqrt(h2)) + 1
        return max(0, c - h), min(g, c + h + 1)

    @numba.njit(cache=True, fastmath=True, nogil=True)
    def _smooth_plane(w, weight, z, tap, inv, out, above):  # pragma: no cover - compiled
        """``out`` = plane z of (w·W / scale) smoothed along x, then along y (in place,
        ``above`` keeping row y-1 as it was). Only rows within R+2 of the centre can be
        non-zero (w·W vanishes beyond R); spans grow to the centre row and then shrink, so
        where row y-1 was not visited ``above`` still holds the zero that row has there."""
        g = w.shape[0]
        c = g // 2
        r = g / 2
        out[:, :] = 0.0
        for y in range(g):
            lo, hi = _row_span(z, y, c, r + 2, g)
            for x in range(lo, hi):
                v = w[z, y, x] * weight[z, y, x]
                if x > 0:
                    v += tap * w[z, y, x - 1] * weight[z, y, x - 1]
                if x < g - 1:
                    v += tap * w[z, y, x + 1] * weight[z, y, x + 1]
                out[y, x] = v * inv
        above[:] = 0.0
        for y in range(g):
            lo, hi = _row_span(z, y, c, r + 2, g)
            for x in range(lo, hi):
                v = out[y, x]
                below = out[y + 1, x] if y < g - 1 else np.float32(0.0)
                out[y, x] = v + tap * (above[x] + below)
                above[x] = v

    @numba.njit(cache=True, fastmath=True, nogil=True)
    def _update_plane(w, z, before, here, after, tap, norm, floor, cap, first):  # pragma: no cover - compiled
        """w /= (w·W) ∗ K on plane z inside the sphere, the z-smoothing from three planes."""
        g = w.shape[0]
        c = g // 2
        r = g / 2
        for y in range(g):
            lo, hi = _row_span(z, y, c, r, g)
            for x in range(lo, hi):
                if (z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2 > r * r or min(z, y, x) < first:
                    continue
                v = abs(here[y, x] + tap * (before[y, x] + after[y, x])) / norm
                w[z, y, x] = min(w[z, y, x] / max(v, floor), cap)

    @numba.njit(cache=True, fastmath=True, parallel=True)
    def _iterate_cpu(w, weight, iterations, tap, norm, floor, cap, scale, chunks):  # pragma: no cover - compiled
        # One pass over w and the weights per iteration, and no other g³ grid: each chunk
        # of z-planes streams through them, holding three smoothed planes (the one before,
        # this one, the next); the planes just outside each chunk are smoothed first, from
        # the iteration's w before any chunk updates it.
        g = w.shape[0]
        c = g // 2
        r = g / 2
        inv = np.float32(1.0) / scale  # the weights in units of their scale
        first = 1 - g % 2  # an even grid's planes k = -g/2 are left out (inside_nyquist)
        for z in prange(g):  # w = 1 inside the sphere
            for y in range(g):
                for x in range(g):
                    if (z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2 <= r * r and min(z, y, x) >= first:
                        w[z, y, x] = 1.0
        starts = np.array([g * i // chunks for i in range(chunks + 1)])
        edges = np.zeros((chunks, 2, g, g), np.float32)  # the smoothed plane before / after each chunk
        for _ in range(iterations):
            for i in prange(chunks):
                above = np.empty(g, np.float32)
                if starts[i] > 0:
                    _smooth_plane(w, weight, starts[i] - 1, tap, inv, edges[i, 0], above)
                if starts[i + 1] < g:
                    _smooth_plane(w, weight, starts[i + 1], tap, inv, edges[i, 1], above)
            for i in prange(chunks):
                z0, z1 = starts[i], starts[i + 1]
                if z0 == z1:
                    continue
                ring = np.empty((3, g, g), np.float32)
                above = np.empty(g, np.float32)
                before = edges[i, 0]
                here = ring[0]
                _smooth_plane(w, weight, z0, tap, inv, here, above)
                for z in range(z0, z1):
                    after = edges[i, 1]
                    if z + 1 < z1:
                        after = ring[(z - z0 + 1) % 3]
                        _smooth_plane(w, weight, z + 1, tap, inv, after, above)
                    _update_plane(w, z, before, here, after, tap, norm, floor, cap, first)
                    before = here
                    here = after
        for z in prange(g):  # w is zero outside the sphere: its rows there stay unwritten
            for y in range(g):
                lo, hi = _row_span(z, y, c, r, g)
                for x in range(lo, hi):
                    w[z, y, x] *= inv

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency
    HAVE_NUMBA = False


def _smooth(xp: ModuleType, x: object) -> object:
    """(x ∗ K) · NORM with zeros beyond the grid, by slices (any array module)."""
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        y = x.copy()
        y[tuple(hi)] += TAP * x[tuple(lo)]
        y[tuple(lo)] += TAP * x[tuple(hi)]
        x = y
    return x


def inside_nyquist(xp: ModuleType, g: int) -> object:
    """True inside the sphere of radius g/2 of a centred g³ grid (RELION zeroes beyond it),
    less the planes k = -g/2 of an even grid.

    Those planes have no Friedel mates on the grid (k = +g/2 is not on it), so a multiplier
    that reached them would differ between k and -k near them, and the map would depend on
    which half of the spectrum a finishing path reads (by up to 1e-3 of its maximum at
    oversampling 1, 2e-4 at 2).
    """
    k = xp.arange(g, dtype=xp.float32) - g // 2
    inside = (k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2) <= (g / 2) ** 2
    if g % 2 == 0:
        inside[0], inside[:, 0], inside[:, :, 0] = False, False, False
    return inside


def weight_scale(xp: ModuleType, weight: object) -> float:
    """The weights' scale, which λ is a fraction of: the median of the positive weights
    among every 7th voxel (a scale, not a statistic; a seventh of a full median's cost)."""
    sample = weight.reshape(-1)[::7]
    positive = sample[sample > 0]
    return float(xp.median(positive)) if positive.size else 1.0


def sampling_multiplier(xp: ModuleType, weight: object, iterations: int, wiener: float,
                        use_kernel: bool = True) -> object:
    """What to multiply the data grid by (centred g³ float32, zero beyond Nyquist): 1 / (W + λ)
    for ``iterations`` = 0, else the iterated weights. ``use_kernel=False`` runs the slicing
    form on NumPy too (the reference the compiled loop is tested against)."""
    g = weight.shape[0]
    scale = weight_scale(xp, weight)
    floor, cap = 1e-6, 1.0 / max(wiener, 1e-12)
    if iterations > 0 and xp is np and HAVE_NUMBA and use_kernel:
        w = zeroed((g, g, g))  # pages only where the sphere's rows are written
        chunks = min(g, 4 * numba.get_num_threads())  # a few per thread: the sphere's middle planes are busiest
        _iterate_cpu(w, np.ascontiguousarray(weight, np.float32), iterations, np.float32(TAP), np.float32(NORM),
                     np.float32(floor), np.float32(cap), np.float32(scale), chunks)
        return w
    inside = inside_nyquist(xp, g)
    if iterations <= 0:
        return xp.where(inside, 1.0 / (weight + wiener * scale), 0.0).astype(xp.float32)
    wn = (weight / scale).astype(xp.float32)
    w = inside.astype(xp.float32)
    for _ in range(iterations):
        conv = xp.abs(_smooth(xp, w * wn)) / NORM
        w = xp.where(inside, xp.minimum(w / xp.maximum(conv, floor), cap), 0.0).astype(xp.float32)
    return w / np.float32(scale)
