"""A synthetic test volume with detail at every resolution: Gaussian 'atoms' of a few
sizes, arranged asymmetrically (or with C<n>/D2 symmetry, for symmetry tests)."""

from __future__ import annotations

import numpy as np

from .symmetry import symmetry_matrices


def phantom(box: int, psize_A: float, seed: int = 0, symmetry: str = "C1", n_atoms: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    radius = 0.32 * box
    pts = rng.normal(size=(n_atoms, 3))
    pts *= (radius * rng.random(n_atoms) ** (1 / 3) / np.linalg.norm(pts, axis=1))[:, None]
    pts[: n_atoms // 4, 2] *= 0.5  # a flattened domain: no accidental symmetry
    sigma_px = rng.choice([1.5, 1.0, 0.75], n_atoms) * 1.5 / psize_A  # ~1.1 to 2.3 Å
    amp = rng.uniform(0.5, 1.0, n_atoms)
    ops = symmetry_matrices(symmetry)
    k = np.arange(box) - box // 2
    vol = np.zeros((box, box, box), np.float64)
    for op in ops:
        for (x, y, z), s, a in zip(pts @ op.T, np.maximum(sigma_px, 0.6), amp, strict=True):
            gz = np.exp(-((k - z) ** 2) / (2 * s * s))
            gy = np.exp(-((k - y) ** 2) / (2 * s * s))
            gx = np.exp(-((k - x) ** 2) / (2 * s * s))
            vol += a * gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    return (vol / vol.max()).astype(np.float32)
