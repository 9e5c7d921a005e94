"""Particles between CryoSPARC ``.cs`` fields and RELION 3.1 STAR columns, both ways.

Conventions (checked against RELION itself in tests/test_external_jobtypes.py: cryohpc's
poses exported, reconstructed by ``relion_reconstruct``, compared with the truth; and
RELION's projections imported and reconstructed by cryohpc in tests/test_relion_peer.py):
- pose: ``alignments3D/pose`` is the rotation vector of the transpose of RELION's
  Euler matrix (``geometry.relion_euler_to_pose``);
- shift: ``alignments3D/shift`` in pixels of ``alignments3D/psize_A``; RELION's
  ``rlnOriginX/YAngst`` is the same shift in Å;
- in-plane: an ``alignments2D`` angle θ (radians) and shift are the 3D pose (0, 0, θ) and
  its shift, so ``rlnAnglePsi`` is θ in degrees and the origins as above (as pyem's
  csparc2star writes them; some tools negate both). RELION's ``relion_stack_create
  --apply_transformation`` aligns images by these values in the test that pins it;
- CTF: defocus in Å both sides, angles in radians here and degrees there;
- split: ``alignments3D/split`` 0/1 is ``rlnRandomSubset`` 1/2; classes count from 0
  here and from 1 in RELION;
- optics: one RELION optics group per distinct (``ctf/exp_group_id``, pixel size, box,
  voltage, Cs, amplitude contrast).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..compute.geometry import pose_to_relion_euler, relion_euler_to_pose
from ..compute.io_star import ParticleTable
from ..dataset import Dataset
from ..errors import InputFileError

ALIGN3D_FIELDS = [
    ("alignments3D/split", "<u4"), ("alignments3D/shift", "<f4", (2,)), ("alignments3D/pose", "<f4", (3,)),
    ("alignments3D/psize_A", "<f4"), ("alignments3D/error", "<f4"), ("alignments3D/weight", "<f4"),
    ("alignments3D/class_posterior", "<f4"), ("alignments3D/class", "<u4"),
]
ALIGN2D_FIELDS = [
    ("alignments2D/split", "<u4"), ("alignments2D/shift", "<f4", (2,)), ("alignments2D/pose", "<f4"),
    ("alignments2D/psize_A", "<f4"), ("alignments2D/error", "<f4"), ("alignments2D/weight", "<f4"),
    ("alignments2D/class_posterior", "<f4"), ("alignments2D/class", "<u4"),
]


def _or(ds: Dataset, field: str, default: float) -> np.ndarray:
    return ds[field].astype(np.float64) if field in ds else np.full(len(ds), default)


def particles_to_star(ds: Dataset, stack_path: Callable[[str], str]) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """The STAR blocks (``optics``, ``particles``) of a particle dataset, and each row's
    ``rlnImageName`` (the key its results come back by). ``stack_path`` turns a
    ``blob/path`` into the path RELION should read (absolute, or a cached copy).

    Raises:
        InputFileError: the particles lack blob fields, or are dark on light
            (``blob/sign`` -1: RELION reads light on dark).
    """
    missing = [f for f in ("blob/path", "blob/idx", "blob/shape", "blob/psize_A") if f not in ds]
    if missing:
        raise InputFileError(f"particles lack {', '.join(missing)}: RELION needs the images")
    if "blob/sign" in ds and np.any(ds["blob/sign"] < 0):
        raise InputFileError("particles have blob/sign -1 (dark on a light background); RELION reads them light on "
                             "dark: import them without flip_sign, or restack them inverted first")
    n = len(ds)
    paths = {p: stack_path(p) for p in set(ds.strings("blob/path"))}
    names = [f"{i + 1:06d}@{paths[p]}" for i, p in zip(ds["blob/idx"].tolist(), ds.strings("blob/path"), strict=True)]
    psize = ds["blob/psize_A"].astype(np.float64)
    box = ds["blob/shape"][:, -1].astype(np.int64)
    kv, cs, amp = _or(ds, "ctf/accel_kv", 300.0), _or(ds, "ctf/cs_mm", 2.7), _or(ds, "ctf/amp_contrast", 0.1)
    exp = ds["ctf/exp_group_id"].astype(np.int64) if "ctf/exp_group_id" in ds else np.zeros(n, np.int64)
    keys = np.stack([exp, np.round(psize, 5), box, np.round(kv, 3), np.round(cs, 4), np.round(amp, 5)], 1)
    groups, first, group_of = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    group_of = group_of.reshape(-1) + 1
    optics = {
        "rlnOpticsGroup": np.arange(1, len(groups) + 1), "rlnOpticsGroupName": np.array(
            [f"opticsGroup{int(g[0])}_{i + 1}" for i, g in enumerate(groups)]),
        "rlnImagePixelSize": psize[first], "rlnImageSize": box[first], "rlnImageDimensionality": np.full(len(groups), 2),
        "rlnVoltage": kv[first], "rlnSphericalAberration": cs[first], "rlnAmplitudeContrast": amp[first],
    }
    parts: dict[str, np.ndarray] = {"rlnImageName": np.array(names), "rlnOpticsGroup": group_of}
    if "ctf/df1_A" in ds:
        parts.update(rlnDefocusU=_or(ds, "ctf/df1_A", 0), rlnDefocusV=_or(ds, "ctf/df2_A", 0),
                     rlnDefocusAngle=np.rad2deg(_or(ds, "ctf/df_angle_rad", 0)),
                     rlnPhaseShift=np.rad2deg(_or(ds, "ctf/phase_shift_rad", 0)),
                     rlnCtfBfactor=_or(ds, "ctf/bfactor", 0), rlnCtfScalefactor=_or(ds, "ctf/scale", 1))
    prefix = "alignments3D" if "alignments3D/pose" in ds or "alignments2D/pose" not in ds else "alignments2D"
    if f"{prefix}/pose" in ds:
        if prefix == "alignments3D":
            rot, tilt, psi = pose_to_relion_euler(ds["alignments3D/pose"].astype(np.float64))
        else:  # an in-plane angle: the 3D pose (0, 0, angle)
            rot, tilt, psi = np.zeros(n), np.zeros(n), np.rad2deg(ds["alignments2D/pose"].astype(np.float64))
        unit = _or(ds, f"{prefix}/psize_A", 0)
        shift = ds[f"{prefix}/shift"].astype(np.float64) if f"{prefix}/shift" in ds else np.zeros((n, 2))
        shift_A = shift * np.where(unit > 0, unit, psize)[:, None]
        parts.update(rlnAngleRot=rot, rlnAngleTilt=tilt, rlnAnglePsi=psi,
                     rlnOriginXAngst=shift_A[:, 0], rlnOriginYAngst=shift_A[:, 1])
    split = ds[f"{prefix}/split"] if f"{prefix}/split" in ds else np.arange(n) % 2
    parts["rlnRandomSubset"] = split.astype(np.int64) % 2 + 1
    if f"{prefix}/class" in ds:
        parts["rlnClassNumber"] = ds[f"{prefix}/class"].astype(np.int64) + 1
    return {"optics": optics, "particles": parts}, names


def alignments_from_star(table: ParticleTable, psize: np.ndarray, dims: int = 3) -> dict[str, np.ndarray]:
    """``alignments3D/...`` (or ``alignments2D/...``) columns from RELION's angles, origins,
    subsets and classes; ``psize`` is each particle's pixel size (Å), the unit of shifts.

    Raises:
        InputFileError: a needed column missing or not a number (file, column, row named).
    """
    n = len(table)
    prefix = f"alignments{dims}D"
    if dims == 3:
        rot, tilt, psi = table.numbers("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", purpose=f"{prefix}/pose")
        pose = relion_euler_to_pose(rot, tilt, psi)
    else:
        pose = np.deg2rad(table.number("rlnAnglePsi")).astype(np.float32)
    if table.has("rlnOriginXAngst", "rlnOriginYAngst"):
        shift = np.stack([table.number("rlnOriginXAngst"), table.number("rlnOriginYAngst")], 1) / psize[:, None]
    elif table.has("rlnOriginX", "rlnOriginY"):
        shift = np.stack([table.number("rlnOriginX"), table.number("rlnOriginY")], 1)
    else:
        shift = np.zeros((n, 2))

    def col(name: str, default: float) -> np.ndarray:
        return table.number(name) if table.has(name) else np.full(n, default)

    return {
        f"{prefix}/pose": pose, f"{prefix}/shift": shift.astype(np.float32), f"{prefix}/psize_A": psize.astype(np.float32),
        f"{prefix}/split": (col("rlnRandomSubset", 0).astype(np.int64) - 1).clip(0, 1).astype(np.uint32)
        if table.has("rlnRandomSubset") else (np.arange(n) % 2).astype(np.uint32),
        f"{prefix}/class": (col("rlnClassNumber", 1).astype(np.int64) - 1).clip(0).astype(np.uint32),
        f"{prefix}/class_posterior": col("rlnMaxValueProbDistribution", 1.0).astype(np.float32),
        f"{prefix}/error": -col("rlnLogLikeliContribution", 0.0).astype(np.float32),
        f"{prefix}/weight": np.ones(n, np.float32),
    }
