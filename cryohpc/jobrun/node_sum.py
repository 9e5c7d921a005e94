"""Summing the ranks' accumulators without copying them through MPI messages.

Ranks on one node keep their accumulators in shared memory. At the end each rank sums a
slab of every rank's grid and puts it into node rank 0's grid, in the accumulators' own
precision, so the node's sum costs one pass over memory split across its ranks instead
of a Reduce that sends every byte and needs a second grid on the root. With several
nodes, the node leaders then reduce in place across the network. Afterwards world rank 0
holds the total; or, on one node with the grids in files, world rank 0 holds half set 0's
total and world rank 1 half set 1's, each having given back the other half's pages, so
that the two finish their half maps side by side and neither holds both half sets while
finishing (:attr:`NodeSum.halves_apart`).

The grids are files in ``/dev/shm``, created empty (all zeros, no page allocated until a
rank writes it: corners no particle reaches never cost memory) and unlinked as soon as
every rank has opened them, so nothing outlives the job. Zeroing an MPI window instead
cost 0.4 s at box 128 and 2.3 s at box 192, before any particle. Each rank maps only its
own grid and reads and writes the others' slabs through their files (``pread``/``pwrite``
a plane at a time): a page a rank maps counts in its resident memory, so adding into a
mapped peer grid made every rank hold its own grid plus its share of the others' (box 128,
2 ranks: 864 MB a rank for a 536 MB accumulator; through the files, no more than its own
grid and a plane). Once summed, the other ranks' grids are closed and their memory freed
while rank 0 finishes the maps. Where ``/dev/shm`` is missing or too small (touching a
page it cannot hold would kill the rank with SIGBUS), an MPI shared-memory window, zeroed,
does the same job with mapped peers. A single rank's grid is :func:`cryohpc.zeroed.zeroed`
memory, for the same reason: ``np.zeros`` of a large array is backed by 2 MB pages that
bring the corners nothing writes in with the written rows.
"""

from __future__ import annotations

import mmap
import os
import secrets
from typing import Any

import numpy as np

from ..zeroed import zeroed
from .mpi import idle_barrier

SHM_DIR = "/dev/shm"


def _shm_has_room(node: Any, nbytes: int) -> bool:
    """Whether the node's ``/dev/shm`` holds every rank's grid, with a tenth to spare
    (node rank 0 decides for all: one file system)."""
    room = False
    if node.rank == 0:
        try:
            st = os.statvfs(SHM_DIR)
            room = st.f_bavail * st.f_frsize >= 1.1 * nbytes * node.size
        except OSError:
            room = False
    return bool(node.bcast(room, root=0))


def _open_shared_files(node: Any, nbytes: int) -> tuple[mmap.mmap, list[int | None]]:
    """Each rank creates one empty file of ``nbytes`` and maps it; every rank opens the
    others' files (descriptors in node rank order, None for its own); the files are
    unlinked once all are open."""
    path = os.path.join(SHM_DIR, f"cryohpc-grid-{os.getpid()}-{secrets.token_hex(6)}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fds: list[int | None] = []
    try:
        os.ftruncate(fd, nbytes)
        own = mmap.mmap(fd, nbytes)
        for other in node.allgather(path):
            fds.append(None if other == path else os.open(other, os.O_RDWR))
        node.Barrier()  # every rank has opened every file
    except BaseException:
        for f in fds:
            if f is not None:
                os.close(f)
        raise
    finally:
        os.close(fd)
        os.unlink(path)
    return own, fds


def _whole(move, fd: int, data: np.ndarray, offset: int, what: str) -> None:
    """All of ``data``'s bytes through ``move`` (a pread or pwrite at an offset)."""
    view = memoryview(data).cast("B")
    while len(view):
        done = move(fd, view, offset)
        if done <= 0:
            raise OSError(f"short {what} a peer's grid at byte {offset}")
        view, offset = view[done:], offset + done


def _write_from(fd: int, data: np.ndarray, offset: int) -> None:
    _whole(os.pwrite, fd, data, offset, "write to")


def _add_from(fd: int, target: np.ndarray, buf: np.ndarray, offset: int) -> None:
    """``target`` += the floats at byte ``offset`` of a peer's file (read into ``buf``)."""
    part = buf[: len(target)]
    _whole(lambda f, v, o: os.preadv(f, [v], o), fd, part, offset, "read from")
    np.add(target, part, out=target)


def _unmap(m: mmap.mmap) -> bool:
    """Unmap unless an array still views it (then it goes when the process ends)."""
    try:
        m.close()
    except BufferError:
        return False
    return True


# without a live radius, a rank's slab is summed this many floats at a time (4 MB)
_CHUNK = 1 << 20


class NodeSum:
    """A zeroed ``shape`` float32 array per rank (``local``) whose sum :meth:`total` forms."""

    def __init__(self, comm: Any, shape: tuple[int, ...], live_radius: float | None = None):
        """``shape`` ends in a cube (m, m, m, channels) when ``live_radius`` is given: only
        voxels within that radius of the cube's centre are ever written."""
        self.comm = comm
        self.shape = shape
        self.live_radius = live_radius
        self._win = None
        self.node = None
        self.leaders_across_nodes = False
        self._peers: list[np.ndarray | None] = []  # the MPI window's grids, mapped
        self._map: mmap.mmap | None = None  # this rank's grid
        self._fds: list[int | None] = []  # the other ranks' grid files
        # the two half sets' totals end on world ranks 0 and 1 (one node, grids in files)
        self.halves_apart = False
        nbytes = int(np.prod(shape)) * 4
        if comm.size == 1:
            self.local = zeroed(shape)
            return
        from mpi4py import MPI

        self.node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
        if _shm_has_room(self.node, nbytes):
            self._map, self._fds = _open_shared_files(self.node, nbytes)
            self.local = np.frombuffer(self._map, np.float32).reshape(shape)
        else:
            self._win = MPI.Win.Allocate_shared(nbytes, 4, comm=self.node)
            for r in range(self.node.size):
                buf, _ = self._win.Shared_query(r)
                self._peers.append(np.ndarray(shape, np.float32, buffer=buf))
            self.local = self._peers[self.node.rank]
            self.local[...] = 0.0  # each rank zeroes (and so places) its own pages
        # node leaders, for a sum across nodes (world rank 0 leads its node: key = world rank)
        self.leaders = comm.Split(0 if self.node.rank == 0 else MPI.UNDEFINED, comm.rank)
        self.leaders_across_nodes = self.node.size < comm.size
        self.halves_apart = (self._map is not None and not self.leaders_across_nodes and len(shape) == 5
                             and shape[0] == 2 and live_radius is not None)

    def total(self) -> np.ndarray | None:
        """The sum of every rank's ``local``: node rank 0's ``local`` on world rank 0, None
        on the others. Collective over the world communicator.

        With :attr:`halves_apart`, world rank 0's grid holds the total of half set 0 and
        world rank 1's the total of half set 1, each rank's other half given back (it
        reads as zeros and must not be touched: a touched page would be allocated again);
        :meth:`fold_second_half` then adds half set 1 into rank 0's half set 0."""
        if self.comm.size == 1:
            return self.local
        from mpi4py import MPI

        self.node.Barrier()  # every rank of the node has finished adding into its grid
        if self._win is not None:
            for target, sources in self._mapped_share():
                for source in sources:
                    np.add(target, source, out=target)
        else:
            self._sum_through_files()
        self.node.Barrier()
        if self.halves_apart:
            self._close_peers(keep=1 if self.node.rank == 0 else None)
            if self.node.rank in (0, 1):
                self._give_back_half(1 - self.node.rank)
                return self.local
            return None
        self._close_peers()
        leader = self.local if self.node.rank == 0 else None
        if self.leaders != MPI.COMM_NULL and self.leaders.size > 1:
            if self.leaders.rank == 0:
                self.leaders.Reduce(MPI.IN_PLACE, leader, op=MPI.SUM, root=0)
            else:
                self.leaders.Reduce(leader, None, op=MPI.SUM, root=0)
        return leader if self.comm.rank == 0 else None

    def _half_floats(self) -> int:
        return int(np.prod(self.shape[1:]))

    def _give_back_half(self, half: int) -> None:
        """Free this rank's pages of one half set (the whole pages inside it)."""
        start, end = half * self._half_floats() * 4, (half + 1) * self._half_floats() * 4
        page = mmap.PAGESIZE
        lo, hi = -(-start // page) * page, (end // page) * page
        if hi > lo:
            self._map.madvise(mmap.MADV_REMOVE, lo, hi - lo)

    def fold_second_half(self) -> None:
        """On world rank 0, after :meth:`total` with :attr:`halves_apart` and once half set
        0 is no longer needed apart: add world rank 1's half set 1 into half set 0, read
        through its file, live rows only. Half set 0 then holds the total of both."""
        flat = self.local.reshape(-1)
        half = self._half_floats()
        spans = [(start - half, count) for start, count in self._spans(range(self.shape[1], 2 * self.shape[1]))]
        buf = np.empty(max((n for _, n in spans), default=0), np.float32)
        for start, count in spans:
            _add_from(self._fds[1], flat[start : start + count], buf, (start + half) * 4)
        self._close_peers()

    def _share(self) -> list[tuple[int, int]]:
        """This node rank's part of the sum, as (first float, count) spans of the flattened
        grid.

        Without ``live_radius``, one contiguous slab of the flattened grid per rank. With
        it, the (leading index, z) planes are shared out and only the rows within that
        radius of the cube's centre are added: no rank ever wrote the others, and on
        memory from ``/dev/shm`` reading them would allocate pages that hold zeros."""
        rank, size = self.node.rank, self.node.size
        total = int(np.prod(self.shape))
        if self.live_radius is None:
            lo, hi = (total * rank) // size, (total * (rank + 1)) // size
            return [(a, min(_CHUNK, hi - a)) for a in range(lo, hi, _CHUNK)]
        planes = total // (self.shape[-2] ** 2 * self.shape[-1])
        return self._spans(range((planes * rank) // size, (planes * (rank + 1)) // size))

    def _spans(self, units: range) -> list[tuple[int, int]]:
        """The live rows of the (leading index, z) planes ``units``, as spans."""
        m, channels = self.shape[-2], self.shape[-1]
        row = m * channels
        c, r2 = m // 2, self.live_radius ** 2
        spans = []
        for unit in units:
            dz2 = (unit % m - c) ** 2
            if dz2 > r2:
                continue
            h = int(np.sqrt(r2 - dz2))
            first, last = max(0, c - h), min(m, c + h + 1)
            spans.append((unit * m * row + first * row, (last - first) * row))
        return spans

    def _sum_through_files(self) -> None:
        """Add the other ranks' spans of this rank's share into this rank's grid, read
        through their files; a rank other than node rank 0 then writes the summed spans
        into rank 0's file. The shares are disjoint: no span is read while written."""
        flat = self.local.reshape(-1)
        spans = self._share()
        buf = np.empty(max((n for _, n in spans), default=0), np.float32)
        for start, count in spans:
            mine = flat[start : start + count]
            for fd in self._fds:
                if fd is not None:
                    _add_from(fd, mine, buf, start * 4)
            keeper = start // self._half_floats() if self.halves_apart else 0
            if self.node.rank != keeper:
                _write_from(self._fds[keeper], mine, start * 4)

    def _mapped_share(self):
        """(node rank 0's span, the other ranks' same spans) for each span of this rank's
        share, on the MPI window where every grid is mapped."""
        leader = self._peers[0].reshape(-1)
        peers = [p.reshape(-1) for p in self._peers[1:]]
        for start, count in self._share():
            yield leader[start : start + count], [p[start : start + count] for p in peers]

    def _close_peers(self, keep: int | None = None) -> None:
        """Close the other ranks' files, but node rank ``keep``'s."""
        for r, fd in enumerate(self._fds):
            if fd is not None and r != keep:
                os.close(fd)
        self._fds = [fd if r == keep else None for r, fd in enumerate(self._fds)] if keep is not None else []

    def keep_total_only(self) -> None:
        """After :meth:`total`: let go of every grid but the total, so the other ranks'
        grids are freed while the total is used. The caller drops its own references to
        ``local`` first (a grid still referenced stays mapped until the process ends)."""
        if self.node is None or self.node.rank == 0 or (self.halves_apart and self.node.rank == 1):
            return
        self.local = None
        if self._win is not None:
            self._peers = [p if r == 0 else None for r, p in enumerate(self._peers)]
        elif self._map is not None and _unmap(self._map):
            self._map = None

    def free(self) -> None:
        """Give the grids back (collective over the node). Ranks arrive at very different
        times (rank 0 finishes maps first), so they wait in a sleeping barrier: MPI's own
        collectives spin, and a spinning rank takes a core from rank 0's threads."""
        if self.node is not None:
            idle_barrier(self.node)
        self._close_peers()
        self._peers.clear()
        self.local = None
        if self._win is not None:
            self._win.Free()
            self._win = None
        if self._map is not None:
            _unmap(self._map)
            self._map = None
