"""Job types used only by the tests, loaded through ``CRYOHPC_PLUGINS``.

``test_sleep`` runs for a given time so tests can kill it, stop its heartbeat or
restart the master under it; ``test_exit`` leaves the worker abruptly, as a crash would.
"""

from __future__ import annotations

import os
import time

from cryohpc.jobtypes import register
from cryohpc.jobtypes.spec import JobTypeSpec, ParamSpec
from cryohpc.model import Resources

register(JobTypeSpec(
    name="test_sleep", title="Sleep (test)", category="utility",
    params=(ParamSpec(name="seconds", type="float", default=1.0),
            ParamSpec(name="gpus", type="int", default=0),
            ParamSpec(name="ranks", type="int", default=1)),
    resources=Resources(cpus=1, gpus=0, ram_gb=0.1),
    resource_params={"gpus": "gpus", "mpi_ranks": "ranks"},
    run="cryohpc_testjobs:run_sleep",
))
register(JobTypeSpec(
    name="test_sleep_gpu", title="Sleep on a GPU (test)", category="utility",
    params=(ParamSpec(name="seconds", type="float", default=1.0),),
    resources=Resources(cpus=1, gpus=1, ram_gb=0.1),
    run="cryohpc_testjobs:run_sleep",
))
register(JobTypeSpec(
    name="test_exit", title="Exit abruptly (test)", category="utility",
    params=(ParamSpec(name="code", type="int", default=3),),
    resources=Resources(cpus=1, gpus=0, ram_gb=0.1),
    run="cryohpc_testjobs:run_exit",
))


def run_sleep(ctx) -> None:
    total = ctx.params["seconds"]
    (ctx.job_dir / f"pid.rank{ctx.rank}").write_text(str(os.getpid()))
    (ctx.job_dir / "gpus.txt").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    steps = max(1, int(total / 0.1))
    for i in range(steps):
        time.sleep(total / steps)
        if i % 5 == 0:
            ctx.progress(i + 1, steps, "steps")
    ctx.log("slept")


def run_exit(ctx) -> None:
    os._exit(ctx.params["code"])

register(JobTypeSpec(
    name="test_mpi_rank_fails", title="One MPI rank fails (test)", category="utility",
    params=(ParamSpec(name="compute_num_ranks", type="int", default=2),),
    resources=Resources(cpus=1, gpus=0, ram_gb=0.1),
    resource_params={"mpi_ranks": "compute_num_ranks"},
    run="cryohpc_testjobs:run_rank_fails",
))


def run_rank_fails(ctx) -> None:
    (ctx.job_dir / f"pid.rank{ctx.rank}").write_text(str(os.getpid()))
    if ctx.rank == 1:
        time.sleep(0.5)
        raise RuntimeError("rank 1 gives up")
    ctx.comm.Barrier()  # without an abort, rank 0 would wait here forever
