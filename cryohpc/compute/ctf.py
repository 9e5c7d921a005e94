"""The contrast transfer function in RELION's form (its ``ctf.h``), so imported RELION
data means the same here.

γ = π λ (−Δf(θ)) s² + (π/2) Cs λ³ s⁴ − φ − asin(w),  CTF = −scale · sin γ · exp(−B s²/4)
with Δf(θ) = ½(df1 + df2) + ½(df1 − df2) cos 2(θ − α), s in 1/Å, Cs and λ in Å.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np


def electron_wavelength_A(accel_kv: float | np.ndarray) -> np.ndarray:
    v = np.asarray(accel_kv, dtype=np.float64) * 1e3
    return 12.2643247 / np.sqrt(v * (1 + v * 0.978466e-6))


class CtfGrid:
    """The CTF at fixed frequencies for many particles; what depends on the frequency
    alone is computed once. Arithmetic in float32 (γ stays well within its precision for
    defoci up to 10 µm at Nyquist of 0.5 Å pixels)."""

    def __init__(self, xp: ModuleType, kx: object, ky: object):
        self.xp = xp
        kx = xp.asarray(kx, dtype=xp.float64)
        ky = xp.asarray(ky, dtype=xp.float64)
        theta = xp.arctan2(ky, kx)
        self.s2 = (kx**2 + ky**2).astype(xp.float32)[None]
        self.cos2 = xp.cos(2 * theta).astype(xp.float32)[None]
        self.sin2 = xp.sin(2 * theta).astype(xp.float32)[None]

    def values(self, df1_A, df2_A, df_angle_rad, accel_kv, cs_mm, amp_contrast, phase_shift_rad,
               bfactor=None, scale=None) -> object:
        """CTF (B, P) float32 for B particles."""
        xp = self.xp

        def col(v):
            return xp.asarray(np.asarray(v, dtype=np.float64).reshape(-1, 1))

        lam = electron_wavelength_A(np.asarray(accel_kv, dtype=np.float64)).reshape(-1, 1)
        dfu, dfv, az = np.asarray(df1_A, np.float64), np.asarray(df2_A, np.float64), np.asarray(df_angle_rad)
        mean, half_diff = col(0.5 * (dfu + dfv)), col(0.5 * (dfu - dfv))
        cos2az, sin2az = col(np.cos(2 * az)), col(np.sin(2 * az))
        defocus = mean + half_diff * (self.cos2 * cos2az + self.sin2 * sin2az)  # Δf(θ)
        a = col(-np.pi * lam)  # per particle
        b = col(0.5 * np.pi * np.asarray(cs_mm, np.float64).reshape(-1, 1) * 1e7 * lam**3)
        offset = col(np.asarray(phase_shift_rad, np.float64) + np.arcsin(np.clip(np.asarray(amp_contrast, np.float64),
                                                                                   0.0, 0.999999)))
        gamma = (a * defocus + b * self.s2) * self.s2 - offset
        out = -xp.sin(gamma.astype(xp.float32))
        if bfactor is not None:
            out = out * xp.exp(-col(bfactor).astype(xp.float32) * self.s2 / 4.0)
        if scale is not None:
            out = out * col(scale).astype(xp.float32)
        return out.astype(xp.float32)


def ctf_values(
    xp: ModuleType,
    kx: object,  # (P,) spatial frequencies along x, 1/Å
    ky: object,  # (P,)
    df1_A: object,  # (B,)
    df2_A: object,
    df_angle_rad: object,
    accel_kv: object,
    cs_mm: object,
    amp_contrast: object,
    phase_shift_rad: object,
    bfactor: object | None = None,
    scale: object | None = None,
) -> object:
    """CTF at P frequencies for B particles: shape (B, P), float32."""
    return CtfGrid(xp, kx, ky).values(df1_A, df2_A, df_angle_rad, accel_kv, cs_mm, amp_contrast, phase_shift_rad,
                                      bfactor, scale)
