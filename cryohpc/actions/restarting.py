"""Restart in CryoSPARC's sense (kill if running, clear, queue again to the same lane with
the same parameters), one restart operation at a time instance-wide; and resume, which
queues a killed or failed job again without clearing it, so it continues from its
checkpoints."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .. import removals
from ..finals import why_protected
from ..instance import Instance
from ..model import Job
from ..status import JobStatus
from ..store import Tx
from .common import Refused, busy_children, reset_to_building, why_files_cannot_go
from .context import ActionContext, Journal, journal_in
from .killing import kill_job
from .queueing import assign_lane, put_on_queue


@contextmanager
def restart_lock(inst: Instance) -> Iterator[None]:
    """Held for a whole restart operation (one job or a selection). The lock is the
    kernel's on an open file, so a restart that crashes releases it.

    Raises:
        Refused: another restart operation holds it (its pid is named).
    """
    path = inst.home / "restart.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise Refused(f"another restart operation is running (pid {holder}); only one runs at a time, "
                          "try again when it is done") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def _same_lane(ctx: ActionContext, tx: Tx, job: Job, lane: str | None) -> str:
    """Assign the lane a job was queued to before (or ``lane``), with the same choices."""
    chosen = job.queued_lane or "local"
    if lane is None or lane == chosen:
        assign_lane(ctx.inst, tx, job, ctx.lanes, chosen, job.queued_gpu_ids, job.queued_target,
                    job.cluster_job_custom_vars)
        return chosen
    assign_lane(ctx.inst, tx, job, ctx.lanes, lane, None, None, None)
    return lane


def check_restart(ctx: ActionContext, tx: Tx, job: Job, lane: str | None = None) -> str:
    """What restarting would do; the job is left cleared and queued in memory."""
    if job.status == JobStatus.BUILDING:
        raise Refused(f"{job.ref} is building; queue it instead of restarting it")
    protected = why_protected(tx, job, "restarted (restarting clears it)", ancestors_too=False)
    if protected:
        raise Refused(protected)
    kill_first = job.status == JobStatus.QUEUED or job.status.active
    if job.run.kill_pending:
        raise Refused(f"{job.ref}: its last run has not been stopped yet ({job.run.reason}); "
                      "restart it once the kill is done")
    problem = busy_children(tx, job) if kill_first else why_files_cannot_go(tx, job)
    if problem:
        raise Refused(problem)
    chosen = _same_lane(ctx, tx, job, lane)
    return ("kill, clear and queue again" if kill_first else "clear and queue again") + f" to lane {chosen}"


def restart_job(inst: Instance, project_uid: str, job_uid: str, lane: str | None = None, *,
                ctx: ActionContext | None = None, journal: Journal | None = None, locked: bool = False) -> Job:
    """Kill the job if it is queued or running, clear it, and queue it again to the same
    lane (or ``lane``) with the same params, GPUs, target and custom variables.

    Clearing and queueing happen in one transaction, so an interruption leaves the job
    either as it was (or killed) or queued again; its old files are removed before it
    launches. ``locked``: the caller holds the restart lock (a multi-job restart).

    Raises:
        Refused: the job is building, its kill is pending, a child of it is queued or
            running, or another restart operation is running.
        BuildError, NotFoundError: the lane cannot take it any more.
    """
    ctx = ctx or ActionContext(inst)
    if not locked:
        with restart_lock(inst):
            return restart_job(inst, project_uid, job_uid, lane, ctx=ctx, journal=journal, locked=True)
    with inst.store.read() as tx:
        job = tx.get_job(project_uid, job_uid)
        check_restart(ctx, tx, job.model_copy(deep=True), lane)
    if job.status == JobStatus.QUEUED or job.status.active:
        kill_job(inst, project_uid, job_uid, ctx=ctx)
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        if job.run.kill_pending:
            raise Refused(f"{job.ref} is killed, but its run must be stopped before it can be cleared "
                          f"({job.run.reason}); run restart again once the kill is done")
        problem = why_files_cannot_go(tx, job)
        if problem:
            raise Refused(problem)
        reset_to_building(tx, job, keep_queue_choices=True)
        _same_lane(ctx, tx, job, lane)
        put_on_queue(job)
        journal_in(tx, journal)
        tx.put_job(job)
    removals.finish(inst.store, project_uid, job_uid)
    return job


def check_resume(ctx: ActionContext, tx: Tx, job: Job, lane: str | None = None) -> str:
    if job.status not in (JobStatus.KILLED, JobStatus.FAILED):
        raise Refused(f"{job.ref} is {job.status.value}; only killed or failed jobs can be resumed")
    if job.run.kill_pending:
        raise Refused(f"{job.ref}: its earlier run has not been stopped yet ({job.run.reason}); "
                      "resume it once the kill is done")
    return f"queue again to lane {_same_lane(ctx, tx, job, lane)}, keeping its files (resumes from checkpoints)"


def resume_job(inst: Instance, project_uid: str, job_uid: str, lane: str | None = None, *,
               ctx: ActionContext | None = None, journal: Journal | None = None) -> Job:
    """Queue a killed or failed job again without clearing its directory: partial results
    (checkpoints) it saved are reused, and its earlier event logs are kept. The lane (its
    own, or ``lane``) is checked as ``queue`` checks it: it may have changed since.

    Raises:
        Refused: the job is not killed or failed. BuildError: the lane cannot take it.
    """
    ctx = ctx or ActionContext(inst)
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        check_resume(ctx, tx, job, lane)
        job.run.pending_outputs = []
        put_on_queue(job)
        journal_in(tx, journal)
        tx.put_job(job)
    return job
