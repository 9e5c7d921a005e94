"""Kill: a queued or running job stops on every lane kind; it keeps its files (outputs it
reported stay aside, so it can be marked complete) until it is cleared."""

from __future__ import annotations

from ..disk_usage import record_job_size
from ..errors import CryohpcError, TransientError, UserError
from ..instance import Instance
from ..lanes import NodeLane, RunHandle
from ..model import Job, set_status
from ..status import JobStatus
from ..store import Tx
from .common import Refused
from .context import ActionContext, Journal, journal_in


def check_kill(ctx: ActionContext, tx: Tx, job: Job) -> str:
    if job.status != JobStatus.QUEUED and not job.status.active:
        raise Refused(f"{job.ref} is {job.status.value}; only queued or running jobs can be killed")
    return "kill (its files stay)" if job.status.active else "take off the queue as killed"


def _by_hand(job: Job) -> str:
    if job.run.cluster_job_id:
        return f"cancel cluster job {job.run.cluster_job_id}"
    return f"stop process group {job.run.pid} on {job.run.host}"


def kill_job(inst: Instance, project_uid: str, job_uid: str, *, ctx: ActionContext | None = None,
             journal: Journal | None = None) -> Job:
    """Kill a queued or running job; its worker and every process it started are stopped.

    The job is marked killed first, so the master, seeing the worker vanish, does not
    record it as failed meanwhile. A job on an SSH worker that does not answer stays
    marked for killing (``kill_pending``); the master stops it once the worker is back.

    Raises:
        Refused: the job is not queued or running. UserError: stopping it failed for good.
    """
    ctx = ctx or ActionContext(inst)
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        check_kill(ctx, tx, job)
        was_running = job.status.active
        if job.status == JobStatus.QUEUED and job.run.launch_uncertain:
            job.run.kill_pending = True  # a launch is (or was, by a master that died) under way
            job.run.reason = "killed while a launch was under way; what it started is stopped once found"
        set_status(job, JobStatus.KILLED)
        journal_in(tx, journal)
        tx.put_job(job)
    if was_running:
        lane = ctx.lanes.get(job.run.lane or job.queued_lane or "local")
        if lane is not None:
            try:
                lane.kill(RunHandle.of(job))
            except TransientError as err:
                if not (isinstance(lane, NodeLane) and lane.kill_when_back):
                    raise UserError(f"{job.ref} is marked killed, but stopping it failed: {err}; "
                                    f"{_by_hand(job)} by hand") from err
                with inst.store.write() as tx:
                    job = tx.get_job(project_uid, job_uid)
                    job.run.kill_pending = True
                    job.run.reason = f"will be stopped when its worker answers again ({err})"
                    tx.put_job(job)
            except CryohpcError as err:
                raise UserError(f"{job.ref} is marked killed, but stopping it failed: {err}; "
                                f"{_by_hand(job)} by hand") from err
        record_job_size(inst.store, project_uid, job_uid)
    return job
