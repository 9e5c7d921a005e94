"""Clear intermediate results of a completed job (see ``intermediates`` for what they are
and what stays)."""

from __future__ import annotations

from .. import removals
from ..instance import Instance
from ..intermediates import intermediate_results, trim
from ..model import Job
from ..sizes import measure
from ..status import JobStatus
from ..store import Tx
from .common import Refused
from .context import ActionContext, Journal, journal_in


def check_clear_intermediate(ctx: ActionContext, tx: Tx, job: Job) -> str:
    if job.status != JobStatus.COMPLETED:
        raise Refused(f"{job.ref} is {job.status.value}; only completed jobs have intermediate results to clear "
                      "(a killed or failed job keeps its checkpoints to resume from)")
    paths, versions = intermediate_results(tx, job)
    if not paths and not versions:
        raise Refused(f"{job.ref} has no intermediate results")
    return f"remove {len(paths)} intermediate file(s) or folder(s), {measure(paths).bytes / 1e6:.1f} MB"


def clear_intermediate(inst: Instance, project_uid: str, job_uid: str, *, ctx: ActionContext | None = None,
                       journal: Journal | None = None) -> Job:
    """Raises:
    Refused: the job is not completed, or has no intermediate results.
    """
    ctx = ctx or ActionContext(inst)
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        check_clear_intermediate(ctx, tx, job)
        freed = measure(intermediate_results(tx, job)[0]).bytes
        trim(tx, job)
        job.job_dir_size = max(0, job.job_dir_size - freed)
        journal_in(tx, journal)
        tx.put_job(job)
    removals.finish(inst.store, project_uid, job_uid)
    return job
