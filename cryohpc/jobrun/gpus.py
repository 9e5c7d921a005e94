"""Which GPU each rank uses, as the node's own allocation says.

An MPI launcher started on the job's first node passes that node's environment to every
rank, so on the other nodes ``CUDA_VISIBLE_DEVICES`` names the first node's GPUs. Inside
a SLURM step (how Hydra and srun start ranks on other nodes) ``SLURM_STEP_GPUS`` is set by
the node itself and wins; the visible list is rewritten to it before any CUDA call."""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass

from ..errors import UserError


def node_gpu_ids(environ: MutableMapping[str, str] | None = None) -> list[str] | None:
    """The GPUs this node gave the job, or None when nothing says (all of them, or none)."""
    env = os.environ if environ is None else environ
    for var in ("SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES"):
        value = env.get(var)
        if value is not None and value.strip() and value.strip() != "NoDevFiles":
            return [g.strip() for g in value.split(",") if g.strip()]
    return None


@dataclass(frozen=True)
class Placement:
    host: str
    local_rank: int
    local_size: int
    gpu: str | None  # the GPU id as the node names it

    def describe(self, rank: int, size: int) -> str:
        return (f"rank {rank} of {size} on {self.host}: local rank {self.local_rank} of {self.local_size}, "
                + (f"GPU {self.gpu}" if self.gpu is not None else "no GPU"))


def place_rank(comm, gpus_asked: int, environ: MutableMapping[str, str] | None = None,
               share: bool = False) -> Placement:
    """This rank's host, local rank and GPU; ``CUDA_VISIBLE_DEVICES`` set to the node's
    own GPUs. Collective (every rank calls it). With ``share`` (the job's
    compute_share_gpus), a node's ranks take its GPUs in turn, as RELION's ranks do.

    Raises:
        UserError: the job asked for GPUs and this node has fewer than its ranks, so two
        ranks would share one without anyone having asked for that.
    """
    env = os.environ if environ is None else environ
    if comm.size == 1:
        local_rank, local_size = 0, 1
    else:
        from mpi4py import MPI

        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank, local_size = node.rank, node.size
        node.Free()
    ids = node_gpu_ids(env)
    if ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    host = socket.gethostname()
    if gpus_asked > 0 and ids is not None and local_size > len(ids) and not share:
        raise UserError(f"{local_size} ranks run on {host} but the scheduler gave it {len(ids)} GPU(s) "
                        f"({','.join(ids)}): ranks would share a GPU; ask for as many GPUs per node as "
                        "ranks per node, or set compute_share_gpus to let them take turns")
    gpu = ids[local_rank % len(ids)] if ids else None
    return Placement(host, local_rank, local_size, gpu if gpus_asked > 0 else None)
