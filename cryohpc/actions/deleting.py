"""Delete: the job is cleared and removed from every workspace, its directory goes, and
its uid is never given again. Its record stays, marked deleted, so children keep
showing which job (and which output) they took their inputs from."""

from __future__ import annotations

from .. import removals
from ..builder import job_dir_abs
from ..finals import why_protected
from ..instance import Instance
from ..model import Job, Run, now, set_status
from ..status import JobStatus
from ..store import Tx
from .common import Refused, why_files_cannot_go
from .context import ActionContext, Journal, journal_in


def check_delete(ctx: ActionContext, tx: Tx, job: Job) -> str:
    if job.deleted:
        raise Refused(f"{job.ref} is already deleted")
    protected = why_protected(tx, job, "deleted")
    if protected:
        raise Refused(protected)
    problem = why_files_cannot_go(tx, job, ctx.releasing)
    if problem:
        raise Refused(problem)
    alive = [c for c in job.children if not tx.get_job(job.project_uid, c, include_deleted=True).deleted]
    return "delete (files removed)" + (f"; children {', '.join(alive)} will show it as deleted" if alive else "")


def delete_job(inst: Instance, project_uid: str, job_uid: str, *, ctx: ActionContext | None = None,
               journal: Journal | None = None) -> Job:
    """Raises:
    Refused: the job runs, is being launched, has its kill pending, or has a queued or
        running child.
    """
    ctx = ctx or ActionContext(inst)
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        check_delete(ctx, tx, job)
        project = tx.get_project(project_uid)
        if job.status == JobStatus.QUEUED:
            set_status(job, JobStatus.BUILDING)
            job.queue_status = None
        job.run = Run()
        job.deleted, job.deleting, job.deleted_at = True, True, now()
        for parent_uid in job.parents:  # a deleted child no longer holds its parents
            parent = tx.get_job(project_uid, parent_uid, include_deleted=True)
            if job_uid in parent.children:
                parent.children = [c for c in parent.children if c != job_uid]
                tx.put_job(parent)
        removals.record(tx, project_uid, job_uid, [job_dir_abs(project, job)])
        journal_in(tx, journal)
        tx.put_job(job)
    removals.finish(inst.store, project_uid, job_uid)
    return job
