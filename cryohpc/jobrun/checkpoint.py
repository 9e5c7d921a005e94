"""Partial results a long job can resume from: one HDF5 file per MPI rank under
``checkpoints/`` (intermediate results of the job), written atomically and valid only
for the same work (a signature of inputs and params)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path


def signature(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return h.hexdigest()


class Checkpoint:
    def __init__(self, job_dir: Path, rank: int, sig: str):
        self.path = job_dir / "checkpoints" / f"rank{rank:03d}.h5"
        self.sig = sig

    def load(self) -> tuple[np.ndarray, int] | None:
        """(accumulators, items done) saved by an earlier run of the same work, or None."""
        try:
            with h5py.File(self.path, "r") as f:
                if f.attrs.get("signature") != self.sig:
                    return None
                return f["acc"][...], int(f.attrs["done"])
        except (OSError, KeyError):
            return None

    def save(self, acc: np.ndarray, done: int) -> None:
        self.path.parent.mkdir(exist_ok=True)
        with atomic_path(self.path) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("acc", data=acc)
            f.attrs["signature"] = self.sig
            f.attrs["done"] = done
