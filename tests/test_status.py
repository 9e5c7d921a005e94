"""The job status transition table."""

from __future__ import annotations

import pytest

from cryohpc.errors import InvalidTransitionError
from cryohpc.model import Job, set_status
from cryohpc.status import TRANSITIONS, JobStatus


def make_job() -> Job:
    return Job(uid="J1", project_uid="P1", type="import_volume", job_dir="J1")


def test_normal_life_of_a_job_is_allowed_and_timestamped():
    job = make_job()
    for s in ["queued", "launched", "started", "running", "waiting", "running", "completed", "building"]:
        set_status(job, JobStatus(s))
    assert job.status == JobStatus.BUILDING
    assert set(job.status_times) == {"queued", "launched", "started", "running", "waiting", "completed", "building"}


@pytest.mark.parametrize("old, new", [
    ("building", "running"), ("building", "completed"), ("completed", "running"),
    ("completed", "queued"), ("killed", "running"), ("queued", "running"),
])
def test_illegal_transitions_are_refused_with_names(old, new):
    job = make_job()
    job.status = JobStatus(old)
    with pytest.raises(InvalidTransitionError, match=f"P1 J1: cannot go from {old} to {new}"):
        set_status(job, JobStatus(new))
    assert job.status == JobStatus(old)


def test_final_states_lead_back_to_building_or_resume_or_mark_complete():
    assert TRANSITIONS[JobStatus.COMPLETED] == {JobStatus.BUILDING}
    assert TRANSITIONS[JobStatus.KILLED] == TRANSITIONS[JobStatus.FAILED] == {
        JobStatus.BUILDING, JobStatus.QUEUED, JobStatus.COMPLETED}
    assert {s for s in JobStatus if s.final} == {JobStatus.COMPLETED, JobStatus.KILLED, JobStatus.FAILED}


def test_every_active_state_can_fail_or_be_killed():
    for s in JobStatus:
        if s.active:
            assert {JobStatus.FAILED, JobStatus.KILLED} <= TRANSITIONS[s]
