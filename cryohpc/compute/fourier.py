"""Centred FFTs and frequency grids: the origin of real space and of frequency space is
at index n//2 in every dimension, as MRC maps and particle images are centred."""

from __future__ import annotations

from types import ModuleType

import numpy as np


def fft_module(xp: ModuleType) -> ModuleType:
    """scipy.fft on the NumPy path (about twice numpy.fft's speed here), cupy.fft on GPUs."""
    if xp is np:
        import scipy.fft

        return scipy.fft
    return xp.fft


def rfft2(xp: ModuleType, images: object) -> object:
    """Unshifted real-input 2D FFT over the last two axes, in the input's precision."""
    return fft_module(xp).rfft2(images)


def ifft2_centered(xp: ModuleType, spectra: object) -> object:
    return xp.fft.fftshift(fft_module(xp).ifft2(xp.fft.ifftshift(spectra, axes=(-2, -1))), axes=(-2, -1))


def fftn_centered(xp: ModuleType, vol: object) -> object:
    return xp.fft.fftshift(fft_module(xp).fftn(xp.fft.ifftshift(vol)))


def ifftn_centered(xp: ModuleType, spec: object) -> object:
    """On NumPy with every core (a map's inverse FFT is the one large transform of a job)."""
    if xp is np:
        import scipy.fft

        return np.fft.fftshift(scipy.fft.ifftn(np.fft.ifftshift(spec), workers=-1, overwrite_x=True))
    return xp.fft.fftshift(fft_module(xp).ifftn(xp.fft.ifftshift(spec)))


def pad_center(xp: ModuleType, arr: object, size: int, nd: int) -> object:
    """Zero-pad the last ``nd`` (square or cubic) dimensions of ``arr`` to ``size``, centred."""
    n = arr.shape[-1]
    if size == n:
        return arr
    lo = size // 2 - n // 2
    shape = arr.shape[:-nd] + (size,) * nd
    out = xp.zeros(shape, dtype=arr.dtype)
    sl = (Ellipsis,) + (slice(lo, lo + n),) * nd
    out[sl] = arr
    return out


def crop_center(arr: object, n: int, nd: int) -> object:
    size = arr.shape[-1]
    lo = size // 2 - n // 2
    return arr[(Ellipsis,) + (slice(lo, lo + n),) * nd]


def half_plane_points(size: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer frequency coordinates (kx, ky) of one half of the 2D plane within ``radius``
    (Friedel mates are restored in 3D): kx > 0, or kx == 0 and ky >= 0 -- the half an
    ``rfft2`` computes."""
    k = np.arange(size) - size // 2
    ky, kx = np.meshgrid(k, k, indexing="ij")
    keep = (kx**2 + ky**2 <= radius**2) & ((kx > 0) | ((kx == 0) & (ky >= 0)))
    return kx[keep], ky[keep]


def radial_index(n: int, nd: int) -> np.ndarray:
    """Integer radius (rounded) of every point of a centred n^nd grid."""
    k = np.arange(n) - n // 2
    grids = np.meshgrid(*([k] * nd), indexing="ij")
    return np.rint(np.sqrt(sum(g.astype(np.float64) ** 2 for g in grids))).astype(np.int64)
