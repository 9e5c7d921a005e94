"""MPI for workers: mpi4py's COMM_WORLD when the job runs under a launcher, a one-rank
stand-in otherwise, so single-rank jobs need no MPI at all."""

from __future__ import annotations

import os
import time
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


def mpi_takes_device_buffers() -> bool:
    """Whether this MPI build reads and writes GPU memory itself (CUDA-aware).
    ``CRYOHPC_MPI_DEVICE_BUFFERS=1|0`` overrides what the library says of itself."""
    forced = os.environ.get("CRYOHPC_MPI_DEVICE_BUFFERS")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        from mpi4py import MPI

        query = getattr(MPI, "Query_cuda_support", None)
        return bool(query()) if query is not None else False
    except Exception:  # an MPI without the extension, or one that refuses the query
        return False


REDUCE_CHUNK_BYTES = 64 << 20


def reduce_sum(comm, array):
    """Sum of every rank's array on rank 0 (None elsewhere). A GPU array is reduced on the
    device where MPI takes device buffers, else through pinned host memory in chunks (so a
    30 GB accumulator never needs 30 GB of host memory twice); the result stays on the GPU."""
    if comm.size == 1:
        return array
    from mpi4py import MPI

    if not isinstance(array, np.ndarray):
        return reduce_device_array(comm, array, MPI.SUM)
    out = np.empty_like(array) if comm.rank == 0 else None
    comm.Reduce(np.ascontiguousarray(array), out, op=MPI.SUM, root=0)
    return out


def reduce_device_array(comm, array, op):
    """:func:`reduce_sum` of a CuPy array with reduction ``op``; the result on rank 0's GPU."""
    import cupy
    import cupyx

    array = cupy.ascontiguousarray(array)
    cupy.cuda.get_current_stream().synchronize()
    root = comm.rank == 0
    if mpi_takes_device_buffers():
        out = cupy.empty_like(array) if root else None
        comm.Reduce(array, out, op=op, root=0)
        return out
    flat = array.reshape(-1)
    chunk = max(1, REDUCE_CHUNK_BYTES // flat.itemsize)
    send = cupyx.empty_pinned(min(chunk, flat.size), flat.dtype)
    recv = cupyx.empty_pinned(min(chunk, flat.size), flat.dtype) if root else None
    out = cupy.empty_like(flat) if root else None
    for a in range(0, flat.size, chunk):
        b = min(flat.size, a + chunk)
        flat[a:b].get(out=send[: b - a])
        comm.Reduce(send[: b - a], recv[: b - a] if root else None, op=op, root=0)
        if root:
            out[a:b].set(recv[: b - a])
    return out.reshape(array.shape) if root else None


def idle_barrier(comm: Any, poll_s: float = 0.005) -> None:
    """A barrier that sleeps between tests instead of spinning on a core."""
    if comm.size == 1:
        return
    wait_sleeping(comm.Ibarrier(), poll_s)


def wait_sleeping(req: Any, poll_s: float = 0.005) -> Any:
    """Complete a non-blocking MPI request, sleeping between tests (MPI's own waits spin
    and take a core from a rank still working); what a receive got, else None."""
    while True:
        done, value = req.test()
        if done:
            return value
        time.sleep(poll_s)
