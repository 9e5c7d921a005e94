"""Projection images of a volume by Fourier-slice extraction, with CTF, shifts and noise:
the data of ``simulate_particles``, and of tests with known answers."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from .backproject import extract_slices, grid_with_margin, trilinear_gridding_correction
from .ctf import ctf_values
from .fourier import fftn_centered, ifft2_centered, pad_center
from .reconstruct import CtfParams
from .xp import to_numpy


class Projector:
    """Holds a padded, pre-corrected 3D spectrum and cuts images out of it."""

    def __init__(self, xp: ModuleType, volume: np.ndarray, psize_A: float, pad: int = 2):
        self.xp, self.box, self.psize_A, self.g = xp, volume.shape[0], psize_A, pad * volume.shape[0]
        vol = xp.asarray(volume, dtype=xp.float32)
        vol = vol / trilinear_gridding_correction(xp, self.box, self.g)  # pre-compensate interpolation
        spec = fftn_centered(xp, pad_center(xp, vol, self.g, 3)).astype(xp.complex64)
        self.spec = pad_center(xp, spec, grid_with_margin(self.g), 3)  # zeros beyond Nyquist
        if xp is np:  # the numba gather reads real and imaginary parts as separate grids
            self._spec_parts = (np.ascontiguousarray(self.spec.real), np.ascontiguousarray(self.spec.imag))
        k = np.arange(self.box) - self.box // 2
        ky, kx = np.meshgrid(k, k, indexing="ij")
        keep = kx**2 + ky**2 <= (self.box / 2) ** 2
        self.kx, self.ky = kx[keep], ky[keep]
        self._gx, self._gy = (self.kx * pad).astype(np.float32), (self.ky * pad).astype(np.float32)
        self._iy, self._ix = xp.asarray(self.ky + self.box // 2), xp.asarray(self.kx + self.box // 2)

    def project(self, rots: np.ndarray, shifts_px: np.ndarray, ctf: CtfParams | None) -> np.ndarray:
        """Images (B, box, box): the particle translated by -shift, so inserting with +shift
        centres it again. The CTF is applied on the box-size grid, as RELION does."""
        xp = self.xp
        vals = extract_slices(xp, self._spec_parts if xp is np else self.spec, rots, self._gx, self._gy)
        s = xp.asarray(shifts_px, dtype=xp.float64)
        phase = 2 * np.pi * (s[:, :1] * xp.asarray(self.kx)[None] + s[:, 1:] * xp.asarray(self.ky)[None]) / self.box
        vals = vals * xp.exp(1j * phase).astype(xp.complex64)
        if ctf is not None:
            fx = xp.asarray(self.kx / (self.box * self.psize_A))
            fy = xp.asarray(self.ky / (self.box * self.psize_A))
            vals = vals * ctf_values(xp, fx, fy, ctf.df1_A, ctf.df2_A, ctf.df_angle_rad, ctf.accel_kv,
                                     ctf.cs_mm, ctf.amp_contrast, ctf.phase_shift_rad)
        spec = xp.zeros((len(rots), self.box, self.box), dtype=xp.complex64)
        spec[:, self._iy, self._ix] = vals
        return to_numpy(xp.real(ifft2_centered(xp, spec))).astype(np.float32)
