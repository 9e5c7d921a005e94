"""Queueing a job again by itself when the cluster, not the job, ended its run: a node
failed, the scheduler preempted it, or it stopped at its time-limit warning with its
checkpoints saved. The lane's ``requeue_on`` names the endings, ``max_requeues`` caps how
often (counted from the last time a user queued it), so a job that always loses its node
ends failed instead of looping. cryohpc resubmits (a new cluster job id, the run history
keeps each); SLURM is asked not to requeue by itself (``--no-requeue``)."""

from __future__ import annotations

from ..lanes import Lane
from ..model import Job, set_status, update_last_run
from ..status import JobStatus, QueueStatus
from .job_events import fail

# the scheduler's state codes that name why it ended a run (SLURM's; PBS and SGE say less)
CAUSES = {"NODE_FAIL": "node_fail", "BOOT_FAIL": "node_fail", "PREEMPTED": "preempted", "TIMEOUT": "timeout"}
DESCRIBED = {"node_fail": "a node of the job failed", "preempted": "preempted by the scheduler",
             "time_limit": "stopped before its time limit, checkpoints saved", "timeout": "killed at its time limit"}


def cause_of(job: Job) -> str | None:
    """Why the run ended, if the cluster ended it: the scheduler's verdict (its state code,
    not the signal the worker saw), else the worker's report that it stopped when asked
    before its time limit (the script then ends normally)."""
    code = (job.run.verdict or "").split(" ", 1)[0].upper()
    if code in CAUSES:
        return CAUSES[code]
    return "time_limit" if job.run.stop_reason else None


def requeue_if_wanted(job: Job, lane: Lane | None) -> bool:
    """Within the caller's transaction: a run the cluster ended goes back on the queue when
    the lane's policy says so and the cap allows; the job is failed otherwise (with why).
    True when it was queued again."""
    if job.status.final and job.status != JobStatus.FAILED:
        return False  # killed by a user meanwhile, or completed: nothing to requeue
    cause = cause_of(job)
    if lane is None or cause is None or cause not in lane.requeue_on:
        if job.status.active and job.run.stop_reason:
            fail(job, f"{DESCRIBED['time_limit']} ({job.run.stop_reason}); lane {job.run.lane} does not requeue "
                      "such jobs: resume it to go on")
        return False
    what = DESCRIBED[cause] + (f" ({job.run.verdict})" if job.run.verdict else "")
    if job.auto_requeues >= lane.max_requeues:
        message = (f"{what}; not queued again: {job.auto_requeues} automatic requeue(s) already "
                   f"(lane {lane.name} allows {lane.max_requeues})")
        if job.status.final:
            job.add_run_error(message)
            update_last_run(job, reason=message)
        else:
            fail(job, message)
        return False
    message = (f"{what}: queued again by itself ({job.auto_requeues + 1} of {lane.max_requeues}), "
               "resuming from its checkpoints")
    if job.status.final:
        job.add_run_error(message)
    else:
        fail(job, message)
    update_last_run(job, state="requeued", reason=message)
    job.auto_requeues += 1
    job.run.pending_outputs = []
    set_status(job, JobStatus.QUEUED)
    job.queue_status = QueueStatus.ACTIVELY_QUEUED
    return True
