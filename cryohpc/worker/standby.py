"""A worker started before its job: ``cryohpc-worker --standby``.

The local lane keeps one of these per rank count it is told to keep warm (``warm_ranks``).
Each rank pays, while no job waits, what a worker's first second costs otherwise: the
interpreter, MPI's start, the imports of every job type, and loading the compiled kernels
of a CPU reconstruction from numba's cache (the first call of a cached kernel in a process
costs 0.3 s). Then rank 0 reads one job directory from its standard input, the master's
pipe, and every rank runs that job as a worker started for it would, writing to its
``job.log``. One standby runs one job and exits, so nothing of a job outlives it; an end of
input (the master stopped or died) ends it with nothing run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from ..events import STANDBY_READY, STANDBY_TAKEN
from ..jobrun.mpi import world

JOB_TAG = 7  # the MPI tag of the job directory rank 0 sends the others
IDLE_POLL_S = 0.02  # ranks other than 0 wait sleeping (MPI's blocking receive spins a core): 0.4% of one


def warm_up() -> None:
    """Import every job type's code and run a tiny CPU reconstruction, so that a job's
    first batch finds numba's kernels loaded and scipy's FFT imported."""
    import numpy as np

    from ..compute.fsc import fsc
    from ..compute.geometry import random_rotations
    from ..compute.reconstruct import CtfParams, Reconstructor
    from ..jobtypes import all_jobtypes

    for spec in all_jobtypes():
        with contextlib.suppress(Exception):  # a broken job type is reported by its own jobs
            spec.load_run()
    rng = np.random.default_rng(0)
    n, box = 4, 16
    images = rng.normal(size=(n, box, box)).astype(np.float32)
    ctf = CtfParams(**{k: np.full(n, v, np.float32) for k, v in (
        ("df1_A", 15000.0), ("df2_A", 14000.0), ("df_angle_rad", 0.3), ("accel_kv", 300.0), ("cs_mm", 2.7),
        ("amp_contrast", 0.1), ("phase_shift_rad", 0.0))})
    rec = Reconstructor(np, box, 1.5)
    for with_ctf in (ctf, None):
        rec.insert(images, random_rotations(n, rng), rng.normal(size=(n, 2)), with_ctf, np.ones(n),
                   np.arange(n) % 2)
    half_a, half_b, _ = rec.finish()
    fsc(half_a, half_b, 1.5)


def next_job(comm) -> Path | None:
    """The job directory the master hands over, on every rank; None at the end of input."""
    if comm.rank == 0:
        line = os.fsdecode(sys.stdin.buffer.readline().rstrip(b"\n"))
        if line:
            os.write(1, STANDBY_TAKEN)  # the lane waits for this before it counts the job as handed over
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # the job reads nothing of the master's pipe
        os.close(devnull)
        for rank in range(1, comm.size):
            comm.send(line, dest=rank, tag=JOB_TAG)
    else:
        request = comm.irecv(source=0, tag=JOB_TAG)
        while True:
            done, line = request.test()
            if done:
                break
            time.sleep(IDLE_POLL_S)
    return Path(line) if line else None


def attach_to(job_dir: Path) -> None:
    """What the lane does for a worker it starts: output appended to the job's log, the job
    directory as working directory."""
    log = os.open(job_dir / "job.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.chdir(job_dir)


def serve(ranks: int) -> int:
    """Warm up, wait for a job, run it; the exit status is the job's."""
    from .main import run_job

    comm = world(ranks)
    if comm.size != ranks:
        print(f"standby for {ranks} ranks started with {comm.size}", file=sys.stderr)
        return 1
    try:
        warm_up()
    except Exception as err:  # noqa: BLE001 - a job started cold still runs
        print(f"warm-up failed, the job will load its kernels itself: {type(err).__name__}: {err}",
              file=sys.stderr, flush=True)
    if comm.rank == 0:
        os.write(1, STANDBY_READY)  # from now on it answers a hand-over at once
    job_dir = next_job(comm)
    if job_dir is None:
        return 0
    attach_to(job_dir)
    return run_job(job_dir)
