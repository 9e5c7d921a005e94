"""One pass of the master: reload lanes, follow launched jobs, retry pending kills,
place and launch queued jobs, let lanes tend their warm workers, publish worker targets'
states.

Every step that concerns one job runs in its own guard: a ``CryohpcError`` fails or holds
that job alone, with the reason on it. Anything else is a bug: it leaves the pass, and
the master logs it and backs off (``master.run_master``).
"""

from __future__ import annotations

import logging

from .. import removals
from ..errors import CryohpcError, TransientError
from ..instance import Instance
from ..lanes import BatchLane, Lane, NodeLane
from ..model import Job
from ..status import JobStatus, QueueStatus
from .accounting import Accountant, accounting_due
from .following import Follower, recently_ended
from .job_events import fail
from .job_reader import JobReader
from .kills import PendingKills
from .lane_set import LaneSet
from .launching import Launcher
from .placement import Action, Decision, LaneView, place

log = logging.getLogger("cryohpc.scheduler")

ACTIVE = [JobStatus.LAUNCHED, JobStatus.STARTED, JobStatus.RUNNING, JobStatus.WAITING]


class Scheduler:
    def __init__(self, inst: Instance, lanes: dict[str, Lane] | None = None):
        self.inst = inst
        self.store = inst.store
        self.lane_set = LaneSet(inst, lanes)
        cfg = inst.config
        self.follower = Follower(self.store, self.lane_set, cfg.heartbeat_timeout_s)
        self.accountant = Accountant(self.store, self.lane_set)
        self.launcher = Launcher(self.store, cfg.instance_uid, cfg.heartbeat_interval_s, inst.paths.master_wake)
        self.kills = PendingKills(self.store, self.lane_set)
        self.reader = JobReader()
        self.sweeper = removals.Sweeper(self.store)

    @property
    def lanes(self) -> dict[str, Lane]:
        return self.lane_set.lanes

    def step(self) -> None:
        self.lane_set.reload()
        with self.store.read() as tx:
            jobs = self.reader.read(tx, [*ACTIVE, JobStatus.QUEUED])
            ended = recently_ended(tx)
            unaccounted = accounting_due(tx)
            projects = {p.uid: p for p in tx.list_projects()} if any(jobs.values()) or ended else {}
        active = [j for s in ACTIVE for j in jobs[s]]
        if active or ended:
            self.follower.follow(active, ended, projects)
        if unaccounted:
            self.accountant.collect(unaccounted)
        self.kills.retry()
        self.sweeper.poke()  # files an interrupted clear or delete left behind
        if jobs[JobStatus.QUEUED]:
            self.launch_ready(jobs[JobStatus.QUEUED], active)
        self.lane_set.tend()
        self.lane_set.publish_target_states()

    def close(self) -> None:
        self.lane_set.close()

    def launch_ready(self, queued: list[Job], active: list[Job]) -> None:
        if {j.queued_lane or "local" for j in queued} - self.lanes.keys():
            # queued for a lane this pass's site configs lack: the job may have been queued
            # (and its lane checked) after this pass read them, so read them again first
            self.lane_set.reload(force=True)
        keys = {(j.project_uid, p) for j in queued for p in j.parents}
        with self.store.read() as tx:
            parent_status = tx.job_statuses(keys) if keys else {}
        for decision in place(queued, parent_status, active, self._lane_views(queued)):
            try:
                self._act(decision)
            except TransientError as err:  # something outside did not answer: hold this job only
                self._hold(decision.job, f"not started, will retry: {err}")
            except CryohpcError as err:  # this job cannot run as it stands (type gone, lane config broken)
                self._if_still_queued(decision.job, lambda job, e=err: fail(job, f"could not launch: {e}"))

    def _lane_views(self, queued: list[Job]) -> dict[str, LaneView]:
        views = {}
        for name in {j.queued_lane or "local" for j in queued}:
            lane = self.lanes.get(name)
            if isinstance(lane, BatchLane):
                views[name] = LaneView(batch=True)
            elif isinstance(lane, NodeLane):
                views[name] = LaneView(targets=lane.targets(), down=frozenset(lane.unavailable()),
                                       oversubscribe=lane.oversubscribe)
        return views

    def _act(self, d: Decision) -> None:
        if d.action == Action.WAIT:
            if d.job.queue_status != d.queue_status:
                self._if_still_queued(d.job, lambda job: setattr(job, "queue_status", d.queue_status))
        elif d.action == Action.FAIL:
            self._if_still_queued(d.job, lambda job: fail(job, d.message))
        else:
            self.launcher.launch(d.job, self.lanes[d.lane], d.alloc)

    def _if_still_queued(self, seen: Job, change) -> None:
        """Apply ``change`` to the stored job in one transaction, unless it left the queue
        since this pass read it (killed, cleared)."""
        with self.store.write() as tx:
            job = tx.get_job(seen.project_uid, seen.uid)
            if job.status == JobStatus.QUEUED:
                change(job)
                tx.put_job(job)

    def _hold(self, seen: Job, message: str) -> None:
        def hold(job: Job) -> None:
            job.queue_status = QueueStatus.WAITING_UNREACHABLE
            job.run.reason = message

        self._if_still_queued(seen, hold)
