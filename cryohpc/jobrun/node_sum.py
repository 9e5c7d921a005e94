"""Summing the ranks' accumulators without copying them through MPI messages.

Ranks on one node keep their accumulators in one MPI shared-memory window. At the end
each rank adds a slab of every other rank's grid into node rank 0's grid, in place and in
the accumulators' own precision, so the node's sum costs one pass over memory split
across its ranks instead of a Reduce that sends every byte and needs a second grid on
the root. With several nodes, the node leaders then reduce in place across the network.
Afterwards every rank on the root's node can read the total.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .mpi import idle_barrier


class NodeSum:
    """A zeroed ``shape`` float32 array per rank (``local``) whose sum :meth:`total` forms."""

    def __init__(self, comm: Any, shape: tuple[int, ...]):
        self.comm = comm
        self.shape = shape
        self._win = None
        self.node = None
        self.leaders_across_nodes = False
        self._peers: list[np.ndarray] = []
        if comm.size == 1:
            self.local = np.zeros(shape, np.float32)
            return
        from mpi4py import MPI

        self.node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
        nbytes = int(np.prod(shape)) * 4
        self._win = MPI.Win.Allocate_shared(nbytes, 4, comm=self.node)
        for r in range(self.node.size):
            buf, _ = self._win.Shared_query(r)
            self._peers.append(np.ndarray(shape, np.float32, buffer=buf))
        self.local = self._peers[self.node.rank]
        self.local[...] = 0.0  # each rank zeroes (and so places) its own pages
        # node leaders, for a sum across nodes (world rank 0 leads its node: key = world rank)
        self.leaders = comm.Split(0 if self.node.rank == 0 else MPI.UNDEFINED, comm.rank)
        self.leaders_across_nodes = self.node.size < comm.size

    def total(self) -> np.ndarray | None:
        """The sum of every rank's ``local``: the array itself on ranks of world rank 0's
        node, None on the others. Collective over the world communicator."""
        if self.comm.size == 1:
            return self.local
        from mpi4py import MPI

        self.node.Barrier()  # every rank of the node has finished adding into its grid
        leader = self._peers[0]
        flat = leader.reshape(-1)
        n = flat.size  # one contiguous share per node rank
        lo, hi = (n * self.node.rank) // self.node.size, (n * (self.node.rank + 1)) // self.node.size
        for peer in self._peers[1:]:
            np.add(flat[lo:hi], peer.reshape(-1)[lo:hi], out=flat[lo:hi])
        self.node.Barrier()
        if self.leaders != MPI.COMM_NULL and self.leaders.size > 1:
            if self.leaders.rank == 0:
                self.leaders.Reduce(MPI.IN_PLACE, leader, op=MPI.SUM, root=0)
            else:
                self.leaders.Reduce(leader, None, op=MPI.SUM, root=0)
        root_node = bool(self.node.bcast(self.comm.rank == 0, root=0))
        self.node.Barrier()  # the cross-node sum has landed before anyone reads it
        return leader if root_node else None

    def free(self) -> None:
        """Give the window back (collective over the node). Ranks arrive at very different
        times (rank 0 finishes maps first), so they wait in a sleeping barrier: MPI's own
        collectives spin, and a spinning rank takes a core from rank 0's threads."""
        if self._win is not None:
            idle_barrier(self.node)
            self._peers.clear()
            self.local = None
            self._win.Free()
            self._win = None

