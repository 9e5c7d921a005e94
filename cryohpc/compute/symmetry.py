"""Point-group rotations for symmetric reconstructions: Cn (axis z) and Dn (n-fold on z,
2-folds perpendicular, the first along x), RELION's and CryoSPARC's conventions."""

from __future__ import annotations

import re

import numpy as np

from ..errors import UserError


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def symmetry_matrices(name: str) -> np.ndarray:
    """Rotation matrices (k, 3, 3) of a point group, identity first.

    Raises:
        UserError: a name other than C<n> or D<n>.
    """
    m = re.fullmatch(r"([CcDd])(\d+)", name.strip())
    if not m or int(m.group(2)) < 1:
        raise UserError(f"symmetry {name!r} is not supported; use C<n> (e.g. C1, C4) or D<n> (e.g. D2)")
    kind, n = m.group(1).upper(), int(m.group(2))
    cyclic = [_rot_z(2 * np.pi * k / n) for k in range(n)]
    if kind == "C":
        return np.stack(cyclic)
    flip_x = np.diag([1.0, -1.0, -1.0])  # 2-fold about x
    return np.stack(cyclic + [c @ flip_x for c in cyclic])
