"""MPI for workers: mpi4py's COMM_WORLD when the job runs under a launcher, a one-rank
stand-in otherwise, so single-rank jobs need no MPI at all."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

# variables set by MPICH/Hydra, Open MPI and SLURM's srun for every rank
_LAUNCH_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALRANKID")


class SingleRank:
    """The subset of an mpi4py communicator workers use, for one process."""

    rank = 0
    size = 1

    def Barrier(self) -> None:  # noqa: N802 (mpi4py's names)
        pass

    def Reduce(self, sendbuf: np.ndarray, recvbuf: np.ndarray | None, root: int = 0) -> None:  # noqa: N802
        if recvbuf is not None:
            recvbuf[...] = sendbuf

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def Abort(self, code: int = 1) -> None:  # noqa: N802
        os._exit(code)


def launched_by_mpi() -> bool:
    return any(v in os.environ for v in _LAUNCH_VARS)


def world(expected_ranks: int = 1):
    """The communicator this worker belongs to."""
    if expected_ranks <= 1 and not launched_by_mpi():
        return SingleRank()
    try:
        from mpi4py import MPI
    except ImportError:
        if expected_ranks > 1:
            raise RuntimeError(f"the job needs {expected_ranks} MPI ranks but mpi4py is not installed") from None
        return SingleRank()
    return MPI.COMM_WORLD


def local_rank(comm) -> int:
    """Rank among the processes of this node (picks the GPU)."""
    for var in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "PMIX_LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    if comm.size == 1:
        return 0
    from mpi4py import MPI

    return comm.Split_type(MPI.COMM_TYPE_SHARED).rank


def reduce_sum(comm, array: np.ndarray) -> np.ndarray | None:
    """Sum of every rank's array on rank 0 (None elsewhere)."""
    if comm.size == 1:
        return array
    from mpi4py import MPI

    out = np.empty_like(array) if comm.rank == 0 else None
    comm.Reduce(np.ascontiguousarray(array), out, op=MPI.SUM, root=0)
    return out
