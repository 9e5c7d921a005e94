"""Inserting a batch of particles on the CPU in one compiled pass per particle.

Per particle, the points of its half plane are read from the batch's ``rfft2``, moved to
the image centre (a sign, or on an odd box a phase), shifted, multiplied by the CTF, and
scattered with trilinear weights into the half set's grid, once per symmetry operator.
The shift's phase exp(-2πi (sx·kx + sy·ky) / box) is the product of one factor per kx
and one per ky, so a particle costs box + box/2 complex exponentials instead of one per
point; no (batch, points) intermediate is ever written. The vectorised form in
:meth:`reconstruct.Reconstructor.insert` (``use_kernel=False``) is the reference.
"""

from __future__ import annotations

import numba
import numpy as np

from .backproject import scatter_point


@numba.njit(cache=True, fastmath=True, nogil=True)
def _insert_particles(acc, spec, which, rows, cols, centre, kx, ky, gx, gy, shifts, use_ctf, ctf, s2, cos2,
                      sin2, rots, ops, box):  # pragma: no cover - compiled
    g = acc.shape[0]
    c = g // 2
    p_count = rows.shape[0]
    half = box // 2
    values_re = np.empty(p_count, np.float32)
    values_im = np.empty(p_count, np.float32)
    weights = np.empty(p_count, np.float32)
    along_x = np.empty(half + 1, np.complex64)
    along_y = np.empty(box, np.complex64)
    turn = np.float32(-2.0 * np.pi / box)
    r = np.empty((1, 3, 3), np.float32)
    for b in which:
        sx, sy = shifts[b, 0], shifts[b, 1]
        for k in range(half + 1):
            t = turn * sx * np.float32(k)
            along_x[k] = complex(np.cos(t), np.sin(t))
        for k in range(box):
            t = turn * sy * np.float32(k - half)
            along_y[k] = complex(np.cos(t), np.sin(t))
        for p in range(p_count):
            v = spec[b, rows[p], cols[p]] * centre[p] * along_x[kx[p]] * along_y[ky[p] + half]
            w = np.float32(1.0)
            if use_ctf:
                defocus = ctf[b, 0] + ctf[b, 1] * (cos2[p] * ctf[b, 2] + sin2[p] * ctf[b, 3])
                gamma = (ctf[b, 4] * defocus + ctf[b, 5] * s2[p]) * s2[p] - ctf[b, 6]
                value = -np.sin(np.float32(gamma))
                v = v * value
                w = value * value
            values_re[p] = v.real
            values_im[p] = v.imag
            weights[p] = w
        for o in range(ops.shape[0]):  # the particle's symmetry-equivalent orientations
            for i in range(3):
                for j in range(3):
                    r[0, i, j] = (ops[o, i, 0] * rots[b, 0, j] + ops[o, i, 1] * rots[b, 1, j]
                                  + ops[o, i, 2] * rots[b, 2, j])
            for p in range(p_count):
                scatter_point(acc, r, 0, gx[p], gy[p], c, values_re[p], values_im[p], weights[p])


def insert_particles(acc_half: np.ndarray, spec: np.ndarray, which: np.ndarray, points: dict[str, np.ndarray],
                     shifts_px: np.ndarray, ctf_rows: np.ndarray | None, rots: np.ndarray, ops: np.ndarray,
                     box: int) -> None:
    """Insert the particles ``which`` of a batch (``spec``: its rfft2) into one half set.

    ``points`` holds the half plane's per-point arrays (rows, cols, centre, kx, ky, gx, gy,
    s2, cos2, sin2); ``ctf_rows`` (B, 7) the CTF coefficients, None for no CTF.
    """
    use_ctf = ctf_rows is not None
    ctf = ctf_rows if use_ctf else np.zeros((1, 7))
    _insert_particles(acc_half, spec, np.ascontiguousarray(which, np.int64), points["rows"], points["cols"],
                      points["centre"], points["kx"], points["ky"], points["gx"], points["gy"],
                      np.ascontiguousarray(shifts_px, np.float32), use_ctf, np.ascontiguousarray(ctf, np.float64),
                      points["s2"], points["cos2"], points["sin2"], np.ascontiguousarray(rots, np.float32),
                      np.ascontiguousarray(ops, np.float32), box)
