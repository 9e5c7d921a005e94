"""Summing the ranks' accumulators through node shared memory, under a real mpiexec:
the files in /dev/shm and the MPI-window fallback give the same exact sum, over the whole
grid or over the ball insertion writes, and nothing is left behind in /dev/shm; through the
files no rank maps another's grid, and with the two half sets' totals apart each of ranks
0 and 1 gives back the half it does not hold; a single rank's grid holds only the pages
written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cryohpc.jobrun import node_sum
from cryohpc.lanes.local import default_mpiexec

SCRIPT = r"""
import os, sys
import numpy as np
from mpi4py import MPI
from cryohpc.jobrun import node_sum

backend, ball = sys.argv[1], sys.argv[2] == "ball"
if backend == "window":
    node_sum.SHM_DIR = "/nonexistent-shm"  # no room there: the MPI window is used
comm = MPI.COMM_WORLD
m, radius = 64, 30.0  # 8 MB a rank: a peer's rows mapped would show in RssShmem
shape = (2, m, m, m, 4) if ball else (7, 9, 11, 4)
ns = node_sum.NodeSum(comm, shape, live_radius=radius if ball else None)
assert (ns._win is None) == (backend == "files")
assert not ns.local.any()  # starts zeroed on either backend
rng = np.random.default_rng(comm.rank)
mine = rng.integers(0, 1000, shape).astype(np.float32)  # integers: the sum is exact in any order
if ball:  # what insertion leaves: nothing beyond the radius
    k = np.arange(m) - m // 2
    mine[:, (k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2) > radius ** 2] = 0
ns.local[...] = mine
everyone = comm.allgather(mine)


def shmem_kb():
    return next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("RssShmem:"))


expected = sum(everyone)
assert ns.halves_apart == (backend == "files" and ball)
before = shmem_kb()
total = ns.total()
grown = shmem_kb() - before
if backend == "files":
    assert grown < 256, f"rank {comm.rank} mapped {grown} kB of the other ranks' grids while summing"
if ns.halves_apart:  # half set 0's total on rank 0, half set 1's on rank 1, the other half given back
    if comm.rank < 2:
        assert np.array_equal(total[comm.rank], expected[comm.rank]), "wrong half-set sum"
        assert before - shmem_kb() > 0.9 * mine[0].nbytes / 1024, "the other half set's pages were kept"
    else:
        assert total is None
    if comm.rank == 0:
        held = shmem_kb()
        ns.fold_second_half()
        assert np.array_equal(total[0], expected[0] + expected[1]), "wrong fold of half set 1 into 0"
        assert shmem_kb() - held < 256, "folding touched the given-back half set"
        assert ns._fds == [], "rank 1's grid file still open after the fold"
    ns.free()
    open(os.path.join(sys.argv[3], f"ok.{comm.rank}"), "w").close()
    sys.exit(0)
if comm.rank == 0:
    assert np.array_equal(total, expected), "wrong sum"
else:
    ns.local = None
ns.keep_total_only()
if comm.rank == 0:
    assert np.array_equal(ns.local, expected), "total lost by keep_total_only"
    if backend == "files":
        assert ns._fds == [], "other ranks' grid files still open"
ns.free()
open(os.path.join(sys.argv[3], f"ok.{comm.rank}"), "w").close()
"""


@pytest.mark.parametrize("backend,ball", [("files", False), ("window", False), ("files", True), ("window", True)])
def test_node_sum_is_exact_on_both_backends_and_leaves_no_files(tmp_path, backend, ball):
    mpiexec = default_mpiexec()
    assert mpiexec, "mpiexec is part of the test environment"
    before = set(Path(node_sum.SHM_DIR).glob("cryohpc-grid-*"))
    script = tmp_path / "sum.py"
    script.write_text(SCRIPT)
    run = subprocess.run([mpiexec, "-n", "3", sys.executable, str(script), backend, "ball" if ball else "cube",
                          str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(p.name for p in tmp_path.glob("ok.*")) == ["ok.0", "ok.1", "ok.2"]
    assert set(Path(node_sum.SHM_DIR).glob("cryohpc-grid-*")) == before


class _OneRank:
    size = 1


def _anon_kb() -> int:
    return next(int(x.split()[1]) for x in Path("/proc/self/status").read_text().splitlines()
                if x.startswith("RssAnon:"))


def test_a_single_ranks_grid_holds_only_the_rows_insertion_writes():
    """np.zeros of a large grid is backed by 2 MB pages where the kernel allows them, and a
    write to one row brings in its whole neighbourhood; the grid a single rank gets must
    cost only the pages of the rows written (the ball's rows are 75% of the cube here)."""
    m, radius = 160, 78.0
    ns = node_sum.NodeSum(_OneRank(), (2, m, m, m, 4), live_radius=radius)
    assert ns.local.dtype == np.float32 and not ns.local[:, ::17, ::13, ::11].any()
    before = _anon_kb()
    planes = ns.local.reshape(-1, m, m, 4)
    written = 0
    for unit in range(len(planes)):
        dz = unit % m - m // 2
        if dz * dz > radius * radius:
            continue
        h = int(np.sqrt(radius * radius - dz * dz))
        rows = planes[unit, m // 2 - h : m // 2 + h + 1]
        rows += 1.0
        written += rows.nbytes
    grown = (_anon_kb() - before) * 1024
    assert written < 0.8 * ns.local.nbytes
    assert grown < written + 4 * 1024 * 1024, f"{grown >> 20} MB resident for {written >> 20} MB of rows written"
    ns.free()
