"""Summing the ranks' accumulators through node shared memory, under a real mpiexec:
the files in /dev/shm and the MPI-window fallback give the same exact sum, over the whole
grid or over the ball insertion writes, and nothing is left behind in /dev/shm."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
shape = (2, 11, 11, 11, 4) if ball else (7, 9, 11, 4)
ns = node_sum.NodeSum(comm, shape, live_radius=3.5 if ball else None)
assert (ns._win is None) == (backend == "files")
assert not ns.local.any()  # starts zeroed on either backend
rng = np.random.default_rng(comm.rank)
mine = rng.integers(0, 1000, shape).astype(np.float32)  # integers: the sum is exact in any order
if ball:  # what insertion leaves: nothing beyond the radius
    k = np.arange(11) - 5
    mine[:, (k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2) > 3.5 ** 2] = 0
ns.local[...] = mine
everyone = comm.allgather(mine)
total = ns.total()
if comm.rank == 0:
    assert np.array_equal(total, sum(everyone)), "wrong sum"
else:
    ns.local = None
ns.keep_total_only()
if comm.rank == 0:
    assert np.array_equal(ns.local, sum(everyone)), "total lost by keep_total_only"
    if sys.argv[1] == "files":
        assert all(m is None for m in ns._maps[1:]), "other ranks' grids still mapped"
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
