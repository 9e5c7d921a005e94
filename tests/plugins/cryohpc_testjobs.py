"""Job types used only by the tests, loaded through ``CRYOHPC_PLUGINS``.

``test_sleep`` runs for a given time so tests can kill it, stop its heartbeat or
restart the master under it; ``test_exit`` leaves the worker abruptly, as a crash would.
"""

from __future__ import annotations

import os
import time

from cryohpc.jobtypes import register
from cryohpc.jobtypes.spec import JobTypeSpec, OutputGroupSpec, ParamSpec
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


register(JobTypeSpec(
    name="test_iterate", title="Iterate (test)", category="refinement",
    description="Saves one version of its output per iteration and a checkpoint, as iterative jobs do; "
                "fails after iteration fail_at when set.",
    outputs=(OutputGroupSpec(name="particles", type="particle", title="Particles", results=("blob",)),),
    params=(ParamSpec(name="iterations", type="int", default=3, min=1),
            ParamSpec(name="n", type="int", default=5, min=1),
            ParamSpec(name="fail_at", type="int", default=0, min=0),
            ParamSpec(name="sleep_s", type="float", default=0.0, min=0)),
    resources=Resources(cpus=1, gpus=0, ram_gb=0.1),
    run="cryohpc_testjobs:run_iterate",
))


def run_iterate(ctx) -> None:
    import numpy as np

    from cryohpc.dataset import Dataset

    p = ctx.params
    (ctx.job_dir / "checkpoints").mkdir(exist_ok=True)
    for i in range(p["iterations"]):
        stack = ctx.job_dir / f"stack_it{i}.bin"
        stack.write_bytes(bytes([i]) * 1000)
        (ctx.job_dir / "checkpoints" / f"iter{i}.ckpt").write_bytes(b"x" * 100)
        ds = Dataset.from_columns({"uid": np.arange(1, p["n"] + 1, dtype=np.uint64),
                                   "blob/path": [ctx.relpath(stack).encode()] * p["n"],
                                   "blob/idx": np.arange(p["n"], dtype=np.uint32) + i})
        ctx.save_output("particles", ds)
        ctx.log(f"iteration {i} done")
        if p["fail_at"] and i + 1 == p["fail_at"]:
            raise RuntimeError(f"failing after iteration {i + 1}, as asked")
        time.sleep(p["sleep_s"])


register(JobTypeSpec(
    name="test_steps", title="Checkpointed steps (test)", category="utility",
    description="Counts `steps` steps of `step_s` seconds, saving the count after each; stops when asked "
                "(the scheduler's time-limit warning) and goes on from the count when run again. steps.log "
                "says which run did which step.",
    params=(ParamSpec(name="steps", type="int", default=10, min=1),
            ParamSpec(name="step_s", type="float", default=1.0, min=0)),
    resources=Resources(cpus=1, gpus=0, ram_gb=0.1),
    run="cryohpc_testjobs:run_steps",
))


def run_steps(ctx) -> None:
    from cryohpc.jobrun.stopping import StopRequested

    saved = ctx.job_dir / "checkpoints" / "steps"
    saved.parent.mkdir(exist_ok=True)
    done = int(saved.read_text()) if saved.exists() else 0
    run_id = os.environ.get("SLURM_JOB_ID", str(os.getpid()))
    ctx.log(f"starting at step {done}")
    while done < ctx.params["steps"]:
        if ctx.stop_requested():
            raise StopRequested(f"stopped after step {done}")
        time.sleep(ctx.params["step_s"])
        done += 1
        saved.write_text(str(done))
        with open(ctx.job_dir / "steps.log", "a") as log:
            log.write(f"{run_id} {done}\n")
