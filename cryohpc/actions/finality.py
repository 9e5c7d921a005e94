"""Mark final / unmark final: the results a user keeps. Marking protects the job and every
job it was built from (see ``finals``); the derived marks are stored in the same
transaction, so listings and the cleanup tool read them without walking the graph."""

from __future__ import annotations

from ..finals import refresh_marks
from ..instance import Instance
from ..model import Job
from ..status import JobStatus
from ..store import Tx
from .common import Refused
from .context import ActionContext, Journal, journal_in


def check_mark_final(ctx: ActionContext, tx: Tx, job: Job) -> str:
    if job.is_final_result:
        raise Refused(f"{job.ref} is already marked final")
    if job.status != JobStatus.COMPLETED:
        raise Refused(f"{job.ref} is {job.status.value}; only completed jobs can be marked final "
                      "(a killed or failed one can be marked complete first)")
    return "mark final; its ancestors become protected"


def check_unmark_final(ctx: ActionContext, tx: Tx, job: Job) -> str:
    if not job.is_final_result:
        raise Refused(f"{job.ref} is not marked final")
    return "unmark final"


def _set_final(inst: Instance, project_uid: str, job_uid: str, final: bool, check, ctx: ActionContext | None,
               journal: Journal | None) -> Job:
    ctx = ctx or ActionContext(inst)
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        check(ctx, tx, job)
        job.is_final_result = final
        tx.put_job(job)
        refresh_marks(tx, project_uid)
        journal_in(tx, journal)
        return tx.get_job(project_uid, job_uid)


def mark_final(inst: Instance, project_uid: str, job_uid: str, *, ctx: ActionContext | None = None,
               journal: Journal | None = None) -> Job:
    """Raises:
    Refused: the job is not completed, or is already final.
    """
    return _set_final(inst, project_uid, job_uid, True, check_mark_final, ctx, journal)


def unmark_final(inst: Instance, project_uid: str, job_uid: str, *, ctx: ActionContext | None = None,
                 journal: Journal | None = None) -> Job:
    """Raises:
    Refused: the job is not marked final.
    """
    return _set_final(inst, project_uid, job_uid, False, check_unmark_final, ctx, journal)
