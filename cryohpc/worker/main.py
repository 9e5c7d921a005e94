"""``cryohpc-worker --job-dir DIR``: run one job from its ``job.json``.

Reports through ``events.jsonl`` only: started, heartbeats, the job's own log and
progress, outputs, then completed or failed (with the traceback). Exit status 0 means
completed. ``--standby N`` starts warm and takes its job directory later (standby.py).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
from pathlib import Path

from ..errors import UserError
from ..events import COMPLETED, FAILED, HEARTBEAT, STOPPED, USAGE, EventWriter
from ..exitcode import EXIT_REQUEUE
from ..jobfile import JobFile
from ..jobrun.mpi import idle_barrier
from ..jobrun.stopping import StopRequested
from ..wakeup import wake_master


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so cleanup and the failure report still run."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


TERM_GRACE_S = 3  # a job that checkpoints gets this long to save and stop after SIGTERM

_stop_watch = None  # the running job's StopWatch, once it has one


def _on_sigterm(signum, frame):
    """A job that looks for stops is asked to checkpoint and stop (the scheduler preempts or
    cancels: SIGKILL follows after its KillWait); it has ``TERM_GRACE_S`` seconds, then, as
    any other job at once, it is terminated."""
    if _stop_watch is not None and _stop_watch.polled:
        if not _stop_watch.by_signal:  # a killer may send SIGTERM twice (the group, then each process)
            _stop_watch.ask()
            signal.signal(signal.SIGALRM, lambda *_: _terminate(signum))
            signal.alarm(TERM_GRACE_S)
        return
    _terminate(signum)


def _terminate(signum: int):
    raise Terminated(signum)


def _heartbeat(events: EventWriter, interval_s: float, stop: threading.Event) -> None:
    while not stop.wait(interval_s):
        events.emit(HEARTBEAT)


def _report_usage(events: EventWriter, ctx, comm) -> None:
    if ctx is not None:
        events.emit(USAGE, **ctx.usage.figures(getattr(comm, "rank", 0)))


def run_job(job_dir: Path) -> int:
    job_dir = job_dir.resolve()
    events = EventWriter(job_dir)
    stop = threading.Event()
    comm = jobfile = ctx = None
    try:
        # imported here so that a broken job-type plugin is reported as the job's failure
        from ..jobrun.context import RunContext
        from ..jobrun.mpi import world
        from ..jobtypes import get_jobtype
        from ..jobtypes.declared import declared_spec

        jobfile = JobFile.read(job_dir)
        spec = declared_spec(jobfile.jobtype, jobfile.type) if jobfile.jobtype else get_jobtype(jobfile.type)
        comm = world(1 if spec.self_launched else jobfile.resources.mpi_ranks)
        if comm.rank == 0:
            events.started()
            beat = threading.Thread(target=_heartbeat, args=(events, jobfile.heartbeat_interval_s, stop), daemon=True)
            beat.start()
        if comm.size != (1 if spec.self_launched else jobfile.resources.mpi_ranks):
            raise UserError(
                f"the job asked for {jobfile.resources.mpi_ranks} MPI ranks but COMM_WORLD has {comm.size}: "
                "the launcher started separate programs (check the lane's MPI launcher, e.g. srun --mpi=pmi2 "
                "with an MPI that supports it)"
            )
        ctx = RunContext(jobfile, spec, events, comm)
        global _stop_watch
        _stop_watch = ctx.stop_watch
        if not spec.self_launched:
            from ..jobrun.gpus import place_rank

            placement = place_rank(comm, jobfile.resources.gpus, share=bool(jobfile.params.get("compute_share_gpus")))
            ctx.log(placement.describe(comm.rank, comm.size), all_ranks=True)
            if placement.gpu is not None:
                ctx.usage.gpu_bound()
        run = spec.load_run()
        if comm.rank == 0:
            ctx.running()
        run(ctx)
        events.emit(USAGE, **ctx.usage.figures(comm.rank))
        # ranks done early sleep here: MPI's own barrier spins, and a spinning rank takes a
        # core from rank 0 while it writes the results (box 192: 0.36 s)
        idle_barrier(comm)
        if comm.rank == 0:
            events.emit(COMPLETED)
        return 0
    except StopRequested as stop:
        signal.alarm(0)  # stopped within the grace a SIGTERM gave
        _report_usage(events, ctx, comm)
        events.emit(STOPPED, reason=str(stop), by_signal=bool(ctx and ctx.stop_watch.by_signal))
        print(f"stopped to be requeued: {stop}", file=sys.stderr, flush=True)
        if comm is not None and comm.size > 1:
            events.close()
            comm.Abort(EXIT_REQUEUE)  # ranks still working resume from their own last checkpoints
        return EXIT_REQUEUE
    except (Exception, Terminated) as err:
        _report_usage(events, ctx, comm)
        rank = getattr(comm, "rank", 0)
        where = f" (MPI rank {rank} of {comm.size})" if comm is not None and comm.size > 1 else ""
        if isinstance(err, UserError):
            # a problem with the job's input: the message says it all, the traceback is for us
            events.emit(FAILED, message=f"{err}{where}", traceback="")
            print(f"ERROR{where}: {err}", file=sys.stderr)
        else:
            events.emit(FAILED, message=f"{type(err).__name__}: {err}{where}", traceback=traceback.format_exc(),
                        signal=getattr(err, "signum", None))
        traceback.print_exc()
        sys.stderr.flush()
        if comm is not None and comm.size > 1:
            events.close()
            comm.Abort(1)  # no rank is left waiting in a collective
        return 1
    finally:
        stop.set()
        events.close()
        if jobfile is not None and jobfile.wake_path and getattr(comm, "rank", 0) == 0:
            wake_master(Path(jobfile.wake_path))  # the master reads the end now, not at its next poll


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryohpc-worker", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--job-dir", type=Path, help="job directory holding job.json")
    which.add_argument("--standby", type=int, metavar="RANKS",
                       help="start warm with RANKS MPI ranks and run the job directory read from stdin")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if args.standby is not None:
        from .standby import serve

        return serve(args.standby)
    return run_job(args.job_dir)


if __name__ == "__main__":
    sys.exit(main())
