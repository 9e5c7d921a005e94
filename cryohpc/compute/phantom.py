"""Synthetic test volumes with detail at every resolution: Gaussian 'atoms' of a few
sizes, arranged asymmetrically (or with C<n>/D2 symmetry, for symmetry tests).

:func:`phantom` samples the atoms on the grid (what simulations project). :class:`AtomModel`
knows their spectrum exactly, so it gives the band-limited volume and projection images
with no interpolation at all: the known answer a reconstruction is judged against, free of
any projector's own error (both cryohpc's and RELION's project by trilinear interpolation
of a padded grid, whose leakage is of the order of the weak top shells it would judge).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ctf import ctf_values
from .symmetry import symmetry_matrices


def _atoms(box: int, seed: int, n_atoms: int, symmetry: str, sigma_choices: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (k·A, 3) as x, y, z in pixels from the box centre, widths and amplitudes."""
    rng = np.random.default_rng(seed)
    radius = 0.32 * box
    pts = rng.normal(size=(n_atoms, 3))
    pts *= (radius * rng.random(n_atoms) ** (1 / 3) / np.linalg.norm(pts, axis=1))[:, None]
    pts[: n_atoms // 4, 2] *= 0.5  # a flattened domain: no accidental symmetry
    sigma = rng.choice(sigma_choices, n_atoms)
    amp = rng.uniform(0.5, 1.0, n_atoms)
    ops = symmetry_matrices(symmetry)
    return (np.concatenate([pts @ op.T for op in ops]), np.tile(sigma, len(ops)), np.tile(amp, len(ops)))


def phantom(box: int, psize_A: float, seed: int = 0, symmetry: str = "C1", n_atoms: int = 400) -> np.ndarray:
    """Atoms of ~1.1 to 2.3 Å (at least 0.6 px) sampled on the box³ grid, peak 1."""
    pts, sigma, amp = _atoms(box, seed, n_atoms, symmetry, np.array([1.5, 1.0, 0.75]) * 1.5 / psize_A)
    k = np.arange(box) - box // 2
    vol = np.zeros((box, box, box), np.float64)
    for (x, y, z), s, a in zip(pts, np.maximum(sigma, 0.6), amp, strict=True):
        gz = np.exp(-((k - z) ** 2) / (2 * s * s))
        gy = np.exp(-((k - y) ** 2) / (2 * s * s))
        gx = np.exp(-((k - x) ** 2) / (2 * s * s))
        vol += a * gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    return (vol / vol.max()).astype(np.float32)


@dataclass
class AtomModel:
    """Gaussian atoms (peak ``amp``) with a closed-form spectrum, k in cycles per pixel:
    F(k) = Σ a·(2πσ²)^{3/2}·exp(-2π²σ²|k|²)·exp(-2πi k·x). Everything it returns is cut at
    the Nyquist sphere (circle)."""

    box: int
    centres_px: np.ndarray  # (A, 3) x, y, z from the box centre
    sigma_px: np.ndarray
    amp: np.ndarray

    @classmethod
    def random(cls, box: int, sigma_px: tuple[float, ...] = (1.125, 1.5, 2.25), seed: int = 0,
               n_atoms: int = 400) -> AtomModel:
        """Atoms placed as :func:`phantom` places them, with widths ``sigma_px`` (wider atoms:
        weaker high frequencies; the default's top shell is ~10⁻⁵ of its lowest)."""
        pts, sigma, amp = _atoms(box, seed, n_atoms, "C1", np.asarray(sigma_px, np.float64))
        return cls(box, pts, sigma, amp)

    def _factors(self, k: np.ndarray, coord: np.ndarray, with_amp: bool) -> np.ndarray:
        """(A, len(k)) per-axis factors: exp(-2π²σ²k²)·exp(-2πi k x) (× the amplitude term)."""
        f = np.exp(-2 * np.pi**2 * self.sigma_px[:, None] ** 2 * k[None, :] ** 2) \
            * np.exp(-2j * np.pi * k[None, :] * coord[:, None])
        return f * (self.amp * (2 * np.pi * self.sigma_px**2) ** 1.5)[:, None] if with_amp else f

    def volume(self) -> np.ndarray:
        """The band-limited volume: the inverse DFT of F on the grid inside the Nyquist sphere."""
        n = self.box
        k = (np.arange(n) - n // 2) / n
        fz, fy, fx = (self._factors(k, self.centres_px[:, i], i == 2) for i in (2, 1, 0))
        spec = np.einsum("az,ay,ax->zyx", fz, fy, fx, optimize=True)
        kk = np.arange(n) - n // 2
        spec[kk[:, None, None] ** 2 + kk[None, :, None] ** 2 + kk[None, None, :] ** 2 > (n / 2) ** 2] = 0
        vol = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(spec))).real
        return vol.astype(np.float32)

    def images(self, rots: np.ndarray, shifts_px: np.ndarray, psize_A: float, ctf=None) -> np.ndarray:
        """Exact projections (B, box, box): the slice R·(kx, ky, 0) of F, moved by -shift
        (inserting with +shift centres them, as :class:`~cryohpc.compute.project.Projector`
        does), times the CTF on the box-size grid, cut at the Nyquist circle."""
        n = self.box
        kk = np.arange(n) - n // 2
        k = kk / n
        ky, kx = np.meshgrid(kk, kk, indexing="ij")
        inside = kx**2 + ky**2 <= (n / 2) ** 2
        ctfs = None
        if ctf is not None:
            ctfs = ctf_values(np, (kx / (n * psize_A)).ravel(), (ky / (n * psize_A)).ravel(), ctf.df1_A, ctf.df2_A,
                              ctf.df_angle_rad, ctf.accel_kv, ctf.cs_mm, ctf.amp_contrast,
                              ctf.phase_shift_rad).reshape(len(rots), n, n)
        out = np.empty((len(rots), n, n), np.float32)
        for i, rot in enumerate(np.asarray(rots, np.float64)):
            p = self.centres_px @ rot  # a point x of the volume lies at Rᵀx in the particle's frame
            spec = self._factors(k, p[:, 1] - shifts_px[i, 1], True).T @ self._factors(k, p[:, 0] - shifts_px[i, 0], False)
            spec *= inside
            if ctfs is not None:
                spec *= ctfs[i]
            out[i] = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(spec))).real
        return out
