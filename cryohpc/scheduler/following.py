"""Following launched jobs: one batched poll per lane, then each job's new events.

Polling first and reading events second means a worker that reported and exited is
never mistaken for one that died silently. Each job is followed in its own short write
transaction, taken only when something moved; a job's directory is measured after that
transaction, never inside it.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from .. import removals
from ..builder import job_dir_abs
from ..disk_usage import record_job_size
from ..errors import CryohpcError
from ..events import read_events
from ..intermediates import clears_on_completion, trim
from ..lanes import BatchLane, Lane, PollResult, RunHandle, RunState
from ..model import Job, Project, now, update_last_run
from ..status import JobStatus
from ..store import Store
from .job_events import apply_event, fail
from .requeue import requeue_if_wanted

log = logging.getLogger("cryohpc.scheduler")

EXPLAIN_WINDOW_S = 300.0


class Follower:
    def __init__(self, store: Store, lanes: Callable[[], dict[str, Lane]], heartbeat_timeout_s: float):
        self.store, self.lanes, self.heartbeat_timeout_s = store, lanes, heartbeat_timeout_s
        # per lane: when it was last asked, and per job the run asked about and the answer
        self._last_poll: dict[str, tuple[float, dict[str, tuple[tuple | None, PollResult]]]] = {}

    def follow(self, active: list[Job], recently_ended: list[Job], projects: dict[str, Project]) -> None:
        lanes = self.lanes()
        by_lane: dict[str, list[Job]] = defaultdict(list)
        for job in active:
            by_lane[job.run.lane or job.queued_lane or "local"].append(job)
        to_explain: dict[str, list[Job]] = defaultdict(list)
        for job in recently_ended:
            to_explain[job.run.lane or job.queued_lane or "local"].append(job)
        for lane_name in set(by_lane) | set(to_explain):
            lane = lanes.get(lane_name)
            jobs = by_lane.get(lane_name, [])
            late = to_explain.get(lane_name, []) if isinstance(lane, BatchLane) else []
            polls = self._poll(lane, jobs + late, projects) if lane and (jobs or late) else {}
            for job in jobs:
                poll = polls.get(job.ref, PollResult(RunState.UNKNOWN, detail=f"lane {lane_name} is not configured"))
                try:
                    self._follow(job, projects[job.project_uid], poll, lane)
                except CryohpcError as err:  # this job's trouble only
                    log.error("following %s: %s", job.ref, err)
            for job in late:
                if job.ref in polls and polls[job.ref].state == RunState.EXITED:
                    self._settle(job, polls[job.ref], lane, projects[job.project_uid])

    def _poll(self, lane: Lane, jobs: list[Job], projects: dict[str, Project]) -> dict[str, PollResult]:
        """One status query for all of a lane's jobs, at most every ``poll_interval_s`` for
        lanes that set one; in between the last answer stands (events are still read)."""
        interval = lane.poll_interval_s
        last_t, last = self._last_poll.get(lane.name, (0.0, {}))
        runs = {j.ref: (j.run.cluster_job_id, j.run.pid) for j in jobs}
        known = all(last.get(ref, (None, None))[0] == run for ref, run in runs.items())  # the same runs, not new ones
        if interval and known and time.monotonic() - last_t < interval:
            return {ref: poll for ref, (_, poll) in last.items()}
        polls = lane.poll([RunHandle.of(j, job_dir_abs(projects[j.project_uid], j)) for j in jobs])
        self._last_poll[lane.name] = (time.monotonic(), {ref: (runs.get(ref), p) for ref, p in polls.items()})
        return polls

    def _nothing_new(self, job: Job, poll: PollResult) -> bool:
        if poll.state == RunState.EXITED:
            return False
        if poll.scheduler_status is not None and poll.scheduler_status != job.run.cluster_status:
            return False
        if poll.nodes and poll.nodes != job.run.nodes:
            return False
        if poll.state == RunState.UNREACHABLE:
            return job.run.reason == poll.detail  # record a new reason once
        if poll.state == RunState.PENDING:
            return True
        return job.run.heartbeat_at is None or now() - job.run.heartbeat_at <= self.heartbeat_timeout_s

    def _follow(self, seen: Job, project: Project, poll: PollResult, lane: Lane | None) -> None:
        job_dir = job_dir_abs(project, seen)
        events, offset = read_events(job_dir, seen.run.events_offset)
        if not events and self._nothing_new(seen, poll):
            return  # no write transaction for a job whose state did not move
        presumed_dead = ended = False
        with self.store.write() as tx:
            job = tx.get_job(seen.project_uid, seen.uid, include_deleted=True)
            if not job.status.active or job.run.events_offset != seen.run.events_offset:
                return  # killed, or followed by someone else, meanwhile
            run = job.run
            hold = isinstance(lane, BatchLane) and bool(lane.requeue_on)
            for ev in events:
                apply_event(job, ev, hold_signalled=hold)
            run.events_offset = offset
            t = now()
            if events or poll.state == RunState.PENDING or poll.scheduler_status != run.cluster_status:
                run.heartbeat_at = t  # nothing is expected from a job still queued at the scheduler
            if poll.scheduler_status is not None:
                run.cluster_status = poll.scheduler_status
                run.reason = poll.detail or None
            if poll.nodes:
                run.nodes = poll.nodes
            elif poll.state == RunState.UNREACHABLE:
                run.reason = poll.detail
            if poll.ended_by_scheduler:
                run.verdict = poll.scheduler_status
            if poll.state == RunState.EXITED and poll.scheduler_status:
                run.cluster_final = True
            if job.status == JobStatus.FAILED and poll.state == RunState.EXITED and poll.ended_by_scheduler:
                requeue_if_wanted(job, lane)  # the worker reported its end, the scheduler said why
            elif not job.status.final:
                if poll.state == RunState.EXITED:
                    code = "unknown" if poll.exit_code is None else poll.exit_code
                    run.exit_code = poll.exit_code
                    cause = poll.detail if poll.ended_by_scheduler else ""
                    if cause and run.signalled:
                        cause = f"{cause} (worker: {run.signalled})"
                    if not requeue_if_wanted(job, lane) and not job.status.final:
                        fail(job, cause or run.signalled or f"worker exited (exit code {code}) without reporting "
                                                            "completion; see job.log")
                elif poll.state in (RunState.UNREACHABLE, RunState.PENDING):
                    pass  # the lane did not answer, or the job waits at the scheduler: no verdict
                elif run.heartbeat_at is not None and t - run.heartbeat_at > self.heartbeat_timeout_s:
                    fail(job, f"no heartbeat from the worker for {t - run.heartbeat_at:.0f} s "
                              f"(limit {self.heartbeat_timeout_s:.0f} s); presumed dead")
                    presumed_dead = True
            ended = job.status.final
            tx.put_job(job)
        if presumed_dead and lane is not None:  # outside the transaction: a kill may take seconds
            lane.kill(RunHandle.of(job, job_dir))
        if ended:
            self._record_size(job, job_dir)

    def _record_size(self, ended: Job, job_dir: Path) -> None:
        """After a job ends: its intermediate results go if it completed and its project
        (or itself) asks for that, then it is measured; no transaction is open while
        files are removed or measured."""
        if ended.status == JobStatus.COMPLETED:
            trimmed: list[Path] = []
            with self.store.write() as tx:
                job = tx.get_job(ended.project_uid, ended.uid, include_deleted=True)
                if job.status == JobStatus.COMPLETED and not job.deleted and \
                        clears_on_completion(tx.get_project(job.project_uid), job):
                    trimmed = trim(tx, job)
                    tx.put_job(job)
            if trimmed:
                removals.finish(self.store, ended.project_uid, ended.uid)
        record_job_size(self.store, ended.project_uid, ended.uid)

    def _settle(self, seen: Job, poll: PollResult, lane: Lane | None, project: Project) -> None:
        """Record the scheduler's last word on an ended job (its worker's report usually
        comes first, while the scheduler still lists it RUNNING), and name the verdict in
        a failed job's error: a job killed at its time limit reports "terminated by
        signal" before the scheduler lists it as TIMEOUT."""
        events, offset = read_events(job_dir_abs(project, seen), seen.run.events_offset)
        with self.store.write() as tx:
            job = tx.get_job(seen.project_uid, seen.uid)
            if job.run.cluster_final or not job.status.final or job.run.cluster_job_id != seen.run.cluster_job_id:
                return  # settled, or a new run began meanwhile
            if job.run.events_offset == seen.run.events_offset:
                for ev in events:  # late reports of ranks other than the one that ended the run
                    apply_event(job, ev)
                job.run.events_offset = offset
            job.run.cluster_final = True
            if poll.scheduler_status:
                job.run.cluster_status = poll.scheduler_status
            job.run.nodes = poll.nodes or job.run.nodes
            if poll.ended_by_scheduler and not job.run.verdict and job.errors_run and job.status == JobStatus.FAILED:
                last = job.errors_run[-1]
                job.run.verdict = poll.scheduler_status
                job.errors_run = [*job.errors_run[:-1],
                                  last.model_copy(update={"message": f"{poll.detail} (worker: {last.message})"})]
            update_last_run(job, verdict=job.run.verdict or job.run.cluster_status, nodes=job.run.nodes)
            if job.status == JobStatus.FAILED:
                requeue_if_wanted(job, lane)
            tx.put_job(job)


def recently_ended(tx) -> list[Job]:
    """Cluster jobs ended in the last few minutes whose scheduler state is not yet final
    (an indexed query: history costs nothing)."""
    since = now() - EXPLAIN_WINDOW_S
    return [j for status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.KILLED)
            for j in tx.jobs_entered_since(status, since) if j.run.cluster_job_id and not j.run.cluster_final]
