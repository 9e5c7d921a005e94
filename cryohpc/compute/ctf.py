"""The contrast transfer function in RELION's form (its ``ctf.h``), so imported RELION
data means the same here.

γ = π λ (−Δf(θ)) s² + (π/2) Cs λ³ s⁴ − φ − asin(w),  CTF = −scale · sin γ · exp(−B s²/4)
with Δf(θ) = ½(df1 + df2) + ½(df1 − df2) cos 2(θ − α), s in 1/Å, Cs and λ in Å.
"""

from __future__ import annotations

from dataclasses import dataclass
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
        k = ctf_coefficients(df1_A, df2_A, df_angle_rad, accel_kv, cs_mm, amp_contrast, phase_shift_rad)

        def col(v):
            return xp.asarray(np.asarray(v, dtype=np.float64).reshape(-1, 1))

        defocus = col(k.df_mean) + col(k.df_half_diff) * (self.cos2 * col(k.cos2az) + self.sin2 * col(k.sin2az))
        gamma = (col(k.a) * defocus + col(k.b) * self.s2) * self.s2 - col(k.offset)
        out = -xp.sin(gamma.astype(xp.float32))
        if bfactor is not None:
            out = out * xp.exp(-col(bfactor).astype(xp.float32) * self.s2 / 4.0)
        if scale is not None:
            out = out * col(scale).astype(xp.float32)
        return out.astype(xp.float32)


@dataclass
class CtfCoefficients:
    """What the CTF of each of B particles needs besides the frequency, float64 (B,):
    γ = (a Δf(θ) + b s²) s² − offset, Δf(θ) = df_mean + df_half_diff cos 2(θ − α) written
    with cos 2α and sin 2α. The CPU grid and the GPU kernel both evaluate this form."""

    df_mean: np.ndarray
    df_half_diff: np.ndarray
    cos2az: np.ndarray
    sin2az: np.ndarray
    a: np.ndarray
    b: np.ndarray
    offset: np.ndarray


def ctf_coefficients(df1_A, df2_A, df_angle_rad, accel_kv, cs_mm, amp_contrast, phase_shift_rad) -> CtfCoefficients:
    def f64(v):
        return np.asarray(v, dtype=np.float64).reshape(-1)

    lam = electron_wavelength_A(f64(accel_kv))
    dfu, dfv, az = f64(df1_A), f64(df2_A), f64(df_angle_rad)
    return CtfCoefficients(
        df_mean=0.5 * (dfu + dfv), df_half_diff=0.5 * (dfu - dfv), cos2az=np.cos(2 * az), sin2az=np.sin(2 * az),
        a=-np.pi * lam, b=0.5 * np.pi * f64(cs_mm) * 1e7 * lam**3,
        offset=f64(phase_shift_rad) + np.arcsin(np.clip(f64(amp_contrast), 0.0, 0.999999)))


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
