"""What several actions share: the user's name, the checks a job must pass before its
files may go, and the reset that clearing means."""

from __future__ import annotations

import os

from ..builder import build_errors, declared_outputs, job_dir_abs
from ..errors import UserError
from ..jobtypes import get_jobtype
from ..model import Job, Run, now, set_status
from ..removals import job_dir_entries, record
from ..status import JobStatus
from ..store import Tx
from ..text import line_problem


class Refused(UserError):
    """An action a job's state does not allow; the message says why and what to do."""


def owner() -> str:
    """The user's login name, or '' where it is not one clean line (it reaches scripts)."""
    try:
        import pwd

        name = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        name = os.environ.get("USER", "")
    return name if line_problem(name) is None else ""


def busy_children(tx: Tx, job: Job, releasing: set[str] = frozenset()) -> str | None:
    """A child that still reads this job's files (queued or running), named, or None;
    ``releasing``: children a plan clears or deletes first."""
    for child_uid in job.children:
        if child_uid in releasing:
            continue
        child = tx.get_job(job.project_uid, child_uid, include_deleted=True)
        if not child.deleted and (child.status == JobStatus.QUEUED or child.status.active):
            return f"{job.ref}: child {child_uid} is {child.status.value}; kill it first"
    return None


def why_files_cannot_go(tx: Tx, job: Job, releasing: set[str] = frozenset()) -> str | None:
    """Why a job's outputs may not be erased now (clear, delete, restart): it runs, a
    launch of it is under way, its last run is still to be stopped, or a child reads it."""
    if job.status.active:
        return f"{job.ref} is {job.status.value}; kill it first"
    if job.status == JobStatus.QUEUED and job.run.launch_uncertain:
        return f"{job.ref} is being launched; kill it first"
    if job.run.kill_pending:
        return f"{job.ref}: its last run has not been stopped yet ({job.run.reason}); try again once the kill is done"
    return busy_children(tx, job, releasing)


def reset_to_building(tx: Tx, job: Job, keep_queue_choices: bool = False) -> None:
    """Clear a job in ``tx``: run record, errors, outputs and (unless a restart keeps
    them) queue choices reset in one step, and its directory's contents noted for
    removal after the commit."""
    project = tx.get_project(job.project_uid)
    if job.status != JobStatus.BUILDING:
        set_status(job, JobStatus.BUILDING)
    job.outputs = declared_outputs(get_jobtype(job.type))
    job.run = Run()
    job.runs_before_clear = len(job.runs)  # kept for usage accounting, no longer shown with the job
    job.errors_run = []
    job.queue_status = None
    if not keep_queue_choices:
        job.queued_lane = job.queued_target = job.queued_gpu_ids = None
        job.cluster_job_custom_vars = {}
    job.job_dir_size = job.intermediate_size = 0  # true once the removals noted below are done
    job.size_measured_at = now()
    job.build_errors = build_errors(tx, job)
    record(tx, job.project_uid, job.uid, job_dir_entries(job_dir_abs(project, job)))
