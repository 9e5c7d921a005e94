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

    def col(v):
        return xp.asarray(v, dtype=xp.float64).reshape(-1, 1)

    kx = xp.asarray(kx, dtype=xp.float64).reshape(1, -1)
    ky = xp.asarray(ky, dtype=xp.float64).reshape(1, -1)
    lam = col(electron_wavelength_A(np.asarray(accel_kv if not hasattr(accel_kv, "get") else accel_kv.get())))
    s2 = kx**2 + ky**2
    theta = xp.arctan2(ky, kx)
    dfu, dfv, az = col(df1_A), col(df2_A), col(df_angle_rad)
    defocus = 0.5 * (dfu + dfv) + 0.5 * (dfu - dfv) * xp.cos(2 * (theta - az))
    cs_A = col(cs_mm) * 1e7
    w = xp.clip(col(amp_contrast), 0.0, 0.999999)
    gamma = -np.pi * lam * defocus * s2 + 0.5 * np.pi * cs_A * lam**3 * s2**2 - col(phase_shift_rad) - xp.arcsin(w)
    out = -xp.sin(gamma)
    if bfactor is not None:
        out = out * xp.exp(-col(bfactor) * s2 / 4.0)
    if scale is not None:
        out = out * col(scale)
    return out.astype(xp.float32)
