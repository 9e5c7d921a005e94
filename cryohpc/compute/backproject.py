"""Fourier-slice insertion (back-projection) and extraction (projection), trilinear.

Grids are centred cubes of even size indexed [z, y, x]; a 2D frequency (kx, ky) of a
particle with rotation R lands at q = R·(kx, ky, 0). Only half of each 2D plane is
inserted; :func:`add_friedel_mates` restores the other half in 3D at the end, halving
the work. Accumulators carry a margin of ``MARGIN`` voxels beyond Nyquist on each side
(:func:`grid_with_margin`) so frequencies up to Nyquist keep all 8 corners inside.

A voxel is ``CHANNELS`` float32: data re, data im, weight, and a fourth left at zero, so
a voxel is 16 aligned bytes that a GPU updates with one vector atomic add (measured 1.5x
over three scalar ones on an H100, where insertion is bound by L2 atomic transactions).
CPU and GPU use the same layout, so checkpoints and MPI reductions mix freely.

On NumPy the scatter and gather run in numba kernels (the vectorised form is memory-bound
and 5-10x slower on CPUs); on CuPy in the CUDA kernels of :mod:`backproject_cuda`, which
use the same layout and arithmetic. ``use_kernel=False`` gives the vectorised form on
either module, the reference all kernels are tested against.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

try:
    import numba

    @numba.njit(cache=True, fastmath=True, nogil=True, inline="always")
    def _cell(rots, b, x, y, c):  # pragma: no cover - compiled
        """Lower corner (grid indices) of the cell holding R_b·(x, y, 0), and the offsets in it."""
        qx = rots[b, 0, 0] * x + rots[b, 0, 1] * y
        qy = rots[b, 1, 0] * x + rots[b, 1, 1] * y
        qz = rots[b, 2, 0] * x + rots[b, 2, 1] * y
        fx, fy, fz = np.floor(qx), np.floor(qy), np.floor(qz)
        return int(fx) + c, int(fy) + c, int(fz) + c, qx - fx, qy - fy, qz - fz

    @numba.njit(cache=True, fastmath=True, nogil=True, inline="always")
    def _corner(k, ix, iy, iz, tx, ty, tz):  # pragma: no cover - compiled
        """Corner k (0-7) of a cell: its grid indices and trilinear weight."""
        dx, dy, dz = k & 1, (k >> 1) & 1, k >> 2
        wt = (tz if dz else 1.0 - tz) * (ty if dy else 1.0 - ty) * (tx if dx else 1.0 - tx)
        return ix + dx, iy + dy, iz + dz, wt

    @numba.njit(cache=True, fastmath=True, nogil=True, inline="always")
    def scatter_point(acc, rots, b, x, y, c, vr, vi, w):  # pragma: no cover - compiled
        """Add data (vr, vi) and weight w at R_b·(x, y, 0) to the 8 voxels around it, trilinear.
        acc is (G, G, G, CHANNELS): data re, data im, weight side by side in one voxel."""
        ix, iy, iz, tx, ty, tz = _cell(rots, b, x, y, c)
        for k in range(8):
            cx, cy, cz, wt = _corner(k, ix, iy, iz, tx, ty, tz)
            acc[cz, cy, cx, 0] += wt * vr
            acc[cz, cy, cx, 1] += wt * vi
            acc[cz, cy, cx, 2] += wt * w

    @numba.njit(cache=True, fastmath=True, nogil=True)
    def _insert_kernel(acc, val_re, val_im, wts, rots, kx, ky):  # pragma: no cover - compiled
        c = acc.shape[0] // 2
        for b in range(val_re.shape[0]):
            for p in range(val_re.shape[1]):
                scatter_point(acc, rots, b, kx[p], ky[p], c, val_re[b, p], val_im[b, p], wts[b, p])

    @numba.njit(cache=True, fastmath=True, nogil=True)
    def _extract_kernel(spec_re, spec_im, rots, kx, ky, out_re, out_im):  # pragma: no cover - compiled
        c = spec_re.shape[0] // 2
        for b in range(out_re.shape[0]):
            for p in range(out_re.shape[1]):
                ix, iy, iz, tx, ty, tz = _cell(rots, b, kx[p], ky[p], c)
                sr = 0.0
                si = 0.0
                for k in range(8):
                    cx, cy, cz, wt = _corner(k, ix, iy, iz, tx, ty, tz)
                    sr += wt * spec_re[cz, cy, cx]
                    si += wt * spec_im[cz, cy, cx]
                out_re[b, p] = sr
                out_im[b, p] = si

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency; kept for odd platforms
    HAVE_NUMBA = False


MARGIN = 2
CHANNELS = 4  # data re, data im, weight, zero


def grid_with_margin(g: int) -> int:
    """Size of an accumulator for a padded image size g (frequencies up to g/2)."""
    return g + 2 * MARGIN


def live_radius(g: int) -> float:
    """How far from the centre of an accumulator for padded size g insertion can write:
    Nyquist and the trilinear corners the margin holds. Voxels beyond stay zero."""
    return g / 2 + MARGIN


def _corners(xp: ModuleType, rots: object, kx: object, ky: object, g: int):
    """Flat indices (B, P, 8) and trilinear weights (B, P, 8) of every point's corners."""
    kx = xp.asarray(kx, dtype=xp.float32)
    ky = xp.asarray(ky, dtype=xp.float32)
    rots = xp.asarray(rots, dtype=xp.float32)
    q = kx[None, :, None] * rots[:, None, :, 0] + ky[None, :, None] * rots[:, None, :, 1]  # (B,P,3) x,y,z
    f = xp.floor(q)
    t = q - f
    i = f.astype(xp.int64) + g // 2
    idx, wts = [], []
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                idx.append(((i[..., 2] + dz) * g + (i[..., 1] + dy)) * g + (i[..., 0] + dx))
                wts.append((t[..., 0] if dx else 1 - t[..., 0]) * (t[..., 1] if dy else 1 - t[..., 1])
                           * (t[..., 2] if dz else 1 - t[..., 2]))
    return xp.stack(idx, -1), xp.stack(wts, -1)


def _scatter_add(xp: ModuleType, target: object, idx: object, values: object) -> None:
    """target[idx] += values with repeated indices summed (atomic adds on a GPU)."""
    at = getattr(xp.add, "at", None)
    if at is not None:
        at(target, idx, values)
    else:  # pragma: no cover - older CuPy
        import cupyx

        cupyx.scatter_add(target, idx, values)


def insert_slices(xp: ModuleType, acc, values, weights, rots, kx, ky, use_kernel: bool = True) -> None:
    """Add B slices: ``values`` (B, P) complex at half-plane points (kx, ky), with
    ``weights`` (B, P) (CTF²) into ``acc`` (G, G, G, CHANNELS) float32 = (data re, data im,
    weight, zero).

    Raises:
        ValueError: a point lies so far out that a corner would leave the grid (the
            compiled kernel does not check bounds, so this is checked here).
    """
    limit = (acc.shape[0] - 2 * MARGIN) / 2
    if len(kx) and float(np.max(np.asarray(kx, np.float64) ** 2 + np.asarray(ky, np.float64) ** 2)) > limit**2 + 1e-6:
        raise ValueError(f"frequencies beyond {limit} voxels do not fit an accumulator of {acc.shape[0]}")
    if xp is np and HAVE_NUMBA and use_kernel:
        _insert_kernel(acc,
                       np.ascontiguousarray(values.real, dtype=np.float32),
                       np.ascontiguousarray(values.imag, dtype=np.float32),
                       np.ascontiguousarray(weights, dtype=np.float32),
                       np.ascontiguousarray(rots, dtype=np.float32),
                       np.ascontiguousarray(kx, dtype=np.float32), np.ascontiguousarray(ky, dtype=np.float32))
        return
    if xp is not np and use_kernel:
        from .backproject_cuda import scatter_values

        scatter_values(acc, values, weights, rots, kx, ky)
        return
    g = acc.shape[0]
    idx, w = _corners(xp, rots, kx, ky, g)
    idx = idx.reshape(-1) * acc.shape[-1]
    flat = acc.reshape(-1)
    for channel, v in enumerate((values.real, values.imag, weights)):
        _scatter_add(xp, flat, idx + channel, (w * xp.asarray(v, dtype=xp.float32)[..., None]).reshape(-1))


def add_friedel_mates(xp: ModuleType, acc) -> tuple:
    """Complete half-plane insertions: A(q) += conj A(-q), W(q) += W(-q). Returns the
    data (re, im) and weight grids."""
    def mirror(a):  # index c + k -> c - k, c = n // 2: a flip, moved by one on an even grid
        return xp.roll(xp.flip(a), 1 - a.shape[0] % 2, axis=(0, 1, 2))

    re, im, w = acc[..., 0], acc[..., 1], acc[..., 2]
    return re + mirror(re), im - mirror(im), w + mirror(w)


def extract_slices(xp: ModuleType, volume_ft: object, rots: object, kx: object, ky: object,
                   use_kernel: bool = True) -> object:
    """Values (B, P) of a centred complex grid at q = R·(kx, ky, 0), trilinear.

    ``volume_ft`` may also be a (real, imag) pair of float32 grids, which the CPU kernel
    reads without splitting the complex grid on every call."""
    if isinstance(volume_ft, tuple):
        re, im = volume_ft
        volume_ft = None if xp is np and HAVE_NUMBA and use_kernel else re + 1j * im
    else:
        re, im = volume_ft.real, volume_ft.imag
    if xp is np and HAVE_NUMBA and use_kernel:
        b, p = len(rots), len(kx)
        out_re, out_im = np.empty((b, p), np.float32), np.empty((b, p), np.float32)
        _extract_kernel(np.ascontiguousarray(re, dtype=np.float32), np.ascontiguousarray(im, dtype=np.float32),
                        np.ascontiguousarray(rots, dtype=np.float32), np.ascontiguousarray(kx, dtype=np.float32),
                        np.ascontiguousarray(ky, dtype=np.float32), out_re, out_im)
        return out_re + 1j * out_im
    if xp is not np and use_kernel:
        from .backproject_cuda import extract_points

        return extract_points(volume_ft, rots, kx, ky)
    g = volume_ft.shape[0]
    idx, w = _corners(xp, rots, kx, ky, g)
    flat = volume_ft.reshape(-1)
    return (flat[idx] * w).sum(-1)


def trilinear_gridding_correction(xp: ModuleType, n: int, g: int) -> object:
    """sinc² of the trilinear kernel over a centred n³ box taken from a g³ grid (divide
    the real-space map by it)."""
    x = (xp.arange(n, dtype=xp.float64) - n // 2) / g
    s = xp.sinc(x) ** 2
    s = xp.maximum(s, 1e-3)
    return (s[:, None, None] * s[None, :, None] * s[None, None, :]).astype(xp.float32)
