"""Clear: outputs erased, params and connections kept, the job back to building. A queued
job is taken off the queue; a running one must be killed first."""

from __future__ import annotations

from .. import removals
from ..finals import why_protected
from ..instance import Instance
from ..model import Job
from ..status import JobStatus
from ..store import Tx
from .common import Refused, reset_to_building, why_files_cannot_go
from .context import ActionContext, Journal, journal_in


def check_clear(ctx: ActionContext, tx: Tx, job: Job) -> str:
    if job.status == JobStatus.BUILDING:
        raise Refused(f"{job.ref} is building; it has nothing to clear")
    protected = why_protected(tx, job, "cleared", ancestors_too=False)
    if protected:
        raise Refused(protected)
    problem = why_files_cannot_go(tx, job, ctx.releasing)
    if problem:
        raise Refused(problem)
    return "take off the queue" if job.status == JobStatus.QUEUED else "erase outputs, back to building"


def clear_job(inst: Instance, project_uid: str, job_uid: str, *, ctx: ActionContext | None = None,
              journal: Journal | None = None) -> Job:
    """Return a job to building: its record is reset in one transaction that also lists
    its files for removal; the files go after the commit (``removals``).

    Raises:
        Refused: the job is building or running, its last run is still to be stopped, or
            a child of it is queued or running.
    """
    ctx = ctx or ActionContext(inst)
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        check_clear(ctx, tx, job)
        reset_to_building(tx, job)
        journal_in(tx, journal)
        tx.put_job(job)
    removals.finish(inst.store, project_uid, job_uid)
    return job
