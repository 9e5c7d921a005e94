"""Mark complete: a killed or failed job's latest outputs become usable as inputs, as if
it had completed. Outputs the worker reported are kept aside when a run ends early; those
it wrote after the master last read its events are picked up here too. A result whose
file is gone is left out, and said."""

from __future__ import annotations

from pathlib import Path

from ..builder import job_dir_abs
from ..events import OutputEvent, read_events
from ..instance import Instance
from ..model import Job, set_status
from ..scheduler.job_events import output_problem, register_outputs
from ..status import JobStatus
from ..store import Tx
from .common import Refused, owner
from .context import ActionContext, Journal, journal_in


def _reported_outputs(tx: Tx, job: Job) -> tuple[list[OutputEvent], list[str]]:
    """The outputs the last run reported whose files exist, and a note per one left out."""
    project = tx.get_project(job.project_uid)
    unread, _ = read_events(job_dir_abs(project, job), job.run.events_offset)
    reported = [*job.run.pending_outputs, *(ev for ev in unread if isinstance(ev, OutputEvent))]
    root = Path(project.project_dir)
    kept, notes = [], []
    for ev in reported:
        problem = output_problem(job, ev) or next(
            (f"its file {r.path} is gone" for r in ev.results if not (root / r.path).is_file()), None)
        if problem:
            notes.append(f"output {ev.group!r} left out: {problem}")
        else:
            kept.append(ev)
    return kept, notes


def check_mark_complete(ctx: ActionContext, tx: Tx, job: Job) -> str:
    if job.status not in (JobStatus.KILLED, JobStatus.FAILED):
        raise Refused(f"{job.ref} is {job.status.value}; only killed or failed jobs can be marked complete")
    if job.run.kill_pending:
        raise Refused(f"{job.ref}: its last run has not been stopped yet ({job.run.reason}); "
                      "mark it complete once the kill is done")
    kept, notes = _reported_outputs(tx, job)
    groups = sorted({ev.group for ev in kept})
    return (f"mark complete with output(s) {', '.join(groups)}" if groups else
            "mark complete (it reported no outputs: nothing will be usable)") + "".join(f"; {n}" for n in notes)


def mark_complete(inst: Instance, project_uid: str, job_uid: str, *, ctx: ActionContext | None = None,
                  journal: Journal | None = None) -> Job:
    """Raises:
    Refused: the job is not killed or failed, or its run is still to be stopped.
    """
    ctx = ctx or ActionContext(inst)
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        note = check_mark_complete(ctx, tx, job)
        job.run.pending_outputs, _ = _reported_outputs(tx, job)
        register_outputs(job)
        job.run.reason = f"marked complete by {owner() or 'a user'} ({note})"
        set_status(job, JobStatus.COMPLETED)
        journal_in(tx, journal)
        tx.put_job(job)
    return job
