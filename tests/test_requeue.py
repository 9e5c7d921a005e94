"""Which run endings put a job back on the queue by itself, and the cap."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryohpc.model import Job, Run
from cryohpc.scheduler.requeue import CAUSES, requeue_if_wanted
from cryohpc.status import JobStatus


class Policy:
    def __init__(self, requeue_on, max_requeues):
        self.name, self.requeue_on, self.max_requeues = "multi", frozenset(requeue_on), max_requeues


def running(verdict: str | None, stop_reason: str | None = None, auto_requeues: int = 0) -> Job:
    job = Job(uid="J1", project_uid="P1", type="homo_reconstruct", job_dir="J1", status=JobStatus.RUNNING,
              auto_requeues=auto_requeues)
    job.run = Run(lane="multi", cluster_job_id="7", launched_at=1.0, verdict=verdict, stop_reason=stop_reason)
    return job


VERDICTS = [*CAUSES, "CANCELLED by 0", "FAILED", "COMPLETED", "OUT_OF_MEMORY", None]


@given(verdict=st.sampled_from(VERDICTS), stopped=st.booleans(),
       policy=st.sets(st.sampled_from(["node_fail", "preempted", "time_limit", "timeout"])),
       done=st.integers(0, 4), cap=st.integers(0, 4))
def test_a_run_is_requeued_only_for_an_ending_the_lane_names_and_under_the_cap(verdict, stopped, policy, done, cap):
    job = running(verdict, "saved at 10 of 20" if stopped else None, done)
    code = (verdict or "").split(" ")[0]
    cause = CAUSES.get(code) or ("time_limit" if stopped else None)  # the scheduler's word first
    requeued = requeue_if_wanted(job, Policy(policy, cap))
    assert requeued == (cause in policy and done < cap)
    if requeued:
        assert job.status == JobStatus.QUEUED and job.auto_requeues == done + 1
        assert job.runs[-1].state == "requeued" and f"({done + 1} of {cap})" in job.runs[-1].reason
    elif cause in policy:
        assert job.status == JobStatus.FAILED and "not queued again" in job.errors_run[-1].message
    elif stopped:  # stopped for its time limit where the lane does not requeue: it says how to go on
        assert job.status == JobStatus.FAILED and "resume it" in job.errors_run[-1].message
    else:
        assert job.status == JobStatus.RUNNING  # the caller fails it with the scheduler's reason


@pytest.mark.parametrize("final", [JobStatus.KILLED, JobStatus.COMPLETED])
def test_a_run_a_user_killed_or_that_completed_is_never_requeued(final):
    job = running("NODE_FAIL")
    job.status = final
    assert not requeue_if_wanted(job, Policy(["node_fail"], 3)) and job.status == final and not job.errors_run
