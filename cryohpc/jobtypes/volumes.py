"""Volume results (``map``, ``map_half_A``...) as .cs columns and MRC files (worker side)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..compute.io_mrc import read_volume, write_volume
from ..dataset import Dataset
from ..errors import InputFileError
from ..jobrun.context import RunContext


def write_volume_result(ctx: RunContext, prefix: str, volume: np.ndarray, psize_A: float,
                        name: str | None = None) -> dict[str, np.ndarray]:
    """Write ``<job>_<name>.mrc`` and return the result's columns for a one-item dataset."""
    path = ctx.job_dir / f"{ctx.jobfile.job_uid}_{name or prefix}.mrc"
    write_volume(path, volume, psize_A)
    return {
        f"{prefix}/path": np.array([ctx.relpath(path).encode()]),
        f"{prefix}/shape": np.array([volume.shape], dtype=np.uint32),
        f"{prefix}/psize_A": np.array([psize_A], dtype=np.float32),
    }


def read_volume_result(ctx: RunContext, ds: Dataset, prefix: str, where: str) -> tuple[np.ndarray, float]:
    """The map a volume dataset's ``prefix`` result points to, and its pixel size.

    Raises:
        InputFileError: the result is missing or its file is unreadable.
    """
    if f"{prefix}/path" not in ds:
        raise InputFileError(f"{where}: the connected volume has no {prefix!r} result ({prefix}/path)")
    path = ctx.project_path(ds.strings(f"{prefix}/path")[0])
    vol, header_psize = read_volume(Path(path))
    psize = float(ds[f"{prefix}/psize_A"][0]) if f"{prefix}/psize_A" in ds else header_psize
    return vol, psize
