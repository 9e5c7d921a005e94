"""Rotations: CryoSPARC axis-angle poses and RELION Euler angles.

A pose is a rotation vector (axis × angle, radians) of R; the particle's central slice
lies at R·(kx, ky, 0). RELION's Euler matrix A (rot, tilt, psi; ZYZ) equals Rᵀ.
"""

from __future__ import annotations

import numpy as np


def relion_euler_to_matrix(rot_deg: np.ndarray, tilt_deg: np.ndarray, psi_deg: np.ndarray) -> np.ndarray:
    """RELION's A matrices, shape (n, 3, 3), from angles in degrees (as in its euler.cpp)."""
    a, b, g = (np.deg2rad(np.asarray(x, dtype=np.float64)) for x in (rot_deg, tilt_deg, psi_deg))
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    A = np.empty(a.shape + (3, 3))
    A[..., 0, 0] = cg * cc - sg * sa
    A[..., 0, 1] = cg * cs + sg * ca
    A[..., 0, 2] = -cg * sb
    A[..., 1, 0] = -sg * cc - cg * sa
    A[..., 1, 1] = -sg * cs + cg * ca
    A[..., 1, 2] = sg * sb
    A[..., 2, 0] = sc
    A[..., 2, 1] = ss
    A[..., 2, 2] = cb
    return A


def matrix_to_relion_euler(A: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`relion_euler_to_matrix` (degrees); tilt in [0, 180]."""
    A = np.asarray(A, dtype=np.float64)
    tilt = np.arccos(np.clip(A[..., 2, 2], -1.0, 1.0))
    sb = np.sin(tilt)
    gimbal = np.abs(sb) < 1e-6
    rot = np.where(gimbal, 0.0, np.arctan2(A[..., 2, 1], A[..., 2, 0]))
    psi = np.where(gimbal, np.arctan2(-A[..., 1, 0], A[..., 0, 0]),
                   np.arctan2(A[..., 1, 2], -A[..., 0, 2]))
    # at tilt = 180 the in-plane angle flips sign
    psi = np.where(gimbal & (A[..., 2, 2] < 0), np.arctan2(A[..., 1, 0], -A[..., 0, 0]), psi)
    return np.rad2deg(rot), np.rad2deg(tilt), np.rad2deg(psi)


def rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    """Rodrigues' formula, vectorised: (..., 3) -> (..., 3, 3)."""
    v = np.asarray(v, dtype=np.float64)
    theta = np.linalg.norm(v, axis=-1, keepdims=True)
    k = np.divide(v, theta, out=np.zeros_like(v), where=theta > 1e-12)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    K = np.zeros(v.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2] = -kz, ky
    K[..., 1, 0], K[..., 1, 2] = kz, -kx
    K[..., 2, 0], K[..., 2, 1] = -ky, kx
    t = theta[..., None]
    eye = np.broadcast_to(np.eye(3), K.shape)
    return eye + np.sin(t) * K + (1 - np.cos(t)) * (K @ K)


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """Rotation vectors of rotation matrices, robust near 0 and π (via quaternions)."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R, axis1=-2, axis2=-1)
    diag = np.stack([R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]], axis=-1)
    # Shepperd: pick the largest of 4w², 4x², 4y², 4z² for stability
    cand = np.concatenate([tr[..., None], diag], axis=-1)
    choice = np.argmax(cand, axis=-1)
    q = np.empty(R.shape[:-2] + (4,))  # (w, x, y, z)
    for c in range(4):
        m = choice == c
        if not np.any(m):
            continue
        r = R[m]
        if c == 0:
            s = np.sqrt(1.0 + np.trace(r, axis1=-2, axis2=-1)) * 2
            q[m] = np.stack([0.25 * s, (r[:, 2, 1] - r[:, 1, 2]) / s, (r[:, 0, 2] - r[:, 2, 0]) / s,
                             (r[:, 1, 0] - r[:, 0, 1]) / s], axis=-1)
        else:
            i = c - 1
            j, k = (i + 1) % 3, (i + 2) % 3
            s = np.sqrt(1.0 + r[:, i, i] - r[:, j, j] - r[:, k, k]) * 2
            qq = np.empty((len(r), 4))
            qq[:, 0] = (r[:, k, j] - r[:, j, k]) / s
            qq[:, 1 + i] = 0.25 * s
            qq[:, 1 + j] = (r[:, j, i] + r[:, i, j]) / s
            qq[:, 1 + k] = (r[:, k, i] + r[:, i, k]) / s
            q[m] = qq
    q = np.where(q[..., :1] < 0, -q, q)  # w >= 0: angle in [0, π]
    vec = q[..., 1:]
    n = np.linalg.norm(vec, axis=-1, keepdims=True)
    angle = 2 * np.arctan2(n, q[..., :1])
    return np.divide(vec * angle, n, out=np.zeros_like(vec), where=n > 1e-15)


def relion_euler_to_pose(rot_deg, tilt_deg, psi_deg) -> np.ndarray:
    """CryoSPARC ``alignments3D/pose`` (float32 rotation vectors) from RELION angles."""
    A = relion_euler_to_matrix(rot_deg, tilt_deg, psi_deg)
    return matrix_to_rotvec(np.swapaxes(A, -1, -2)).astype(np.float32)


def pose_to_relion_euler(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    R = rotvec_to_matrix(pose)
    return matrix_to_relion_euler(np.swapaxes(R, -1, -2))


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """Rotation matrices (n, 3, 3) uniform over SO(3) (from normalised 4D Gaussians)."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], 1)
