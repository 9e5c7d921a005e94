"""Job status and queue status, with the one transition table every status change uses.

The names are CryoSPARC's. ``JobStatus.final`` marks the states a job leaves only by
being cleared (back to ``building``).
"""

from __future__ import annotations

from enum import StrEnum

from .errors import InvalidTransitionError


class JobStatus(StrEnum):
    BUILDING = "building"
    QUEUED = "queued"
    LAUNCHED = "launched"
    STARTED = "started"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    KILLED = "killed"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in _FINAL

    @property
    def active(self) -> bool:
        """Holding lane resources: a worker was launched and has not finished."""
        return self in _ACTIVE


_FINAL = {JobStatus.COMPLETED, JobStatus.KILLED, JobStatus.FAILED}
_ACTIVE = {JobStatus.LAUNCHED, JobStatus.STARTED, JobStatus.RUNNING, JobStatus.WAITING}

S = JobStatus
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.BUILDING: frozenset({S.QUEUED}),
    # queued -> building is "unqueue"; queued -> killed is a kill before launch
    S.QUEUED: frozenset({S.BUILDING, S.LAUNCHED, S.KILLED, S.FAILED}),
    S.LAUNCHED: frozenset({S.STARTED, S.RUNNING, S.COMPLETED, S.KILLED, S.FAILED}),
    S.STARTED: frozenset({S.RUNNING, S.WAITING, S.COMPLETED, S.KILLED, S.FAILED}),
    S.RUNNING: frozenset({S.WAITING, S.COMPLETED, S.KILLED, S.FAILED}),
    S.WAITING: frozenset({S.RUNNING, S.COMPLETED, S.KILLED, S.FAILED}),
    # completed jobs are left only by clearing (restart clears, then queues); killed and
    # failed ones may also be resumed (queued again with their directory, so checkpoints
    # are reused) or marked complete (their latest outputs become usable)
    S.COMPLETED: frozenset({S.BUILDING}),
    S.KILLED: frozenset({S.BUILDING, S.QUEUED, S.COMPLETED}),
    S.FAILED: frozenset({S.BUILDING, S.QUEUED, S.COMPLETED}),
}


def check_transition(job_ref: str, old: JobStatus, new: JobStatus) -> None:
    """Refuse a status change the table does not allow.

    Raises:
        InvalidTransitionError: naming the job and both states.
    """
    if new not in TRANSITIONS[old]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[old]))
        raise InvalidTransitionError(f"{job_ref}: cannot go from {old.value} to {new.value} (allowed: {allowed})")


class QueueStatus(StrEnum):
    """Why a queued job has not been launched yet (CryoSPARC's queue_status)."""

    WAITING_INPUTS = "waiting_inputs"  # a parent has not completed
    ACTIVELY_QUEUED = "actively_queued"  # eligible, the scheduler will consider it next pass
    WAITING_RESOURCES = "waiting_resources"  # the lane lacks free CPUs/RAM/GPUs now
    WAITING_PARENT_FAILED = "waiting_parent_failed"  # a parent failed or was killed
    WAITING_UNREACHABLE = "waiting_unreachable"  # the worker target(s) it may use do not answer
    LAUNCHED = "launched"
