"""Kills that could not be done when asked: a job killed while its SSH worker did not
answer, or while a launch of it was under way (perhaps by a master that then died: the
run is looked for by its tag first). Retried every few seconds (an indexed query on the
``kill_pending`` column), once the target answers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from ..errors import CryohpcError
from ..lanes import Lane, NodeLane, RunHandle
from ..model import Resources
from ..store import Store
from .launching import request_for

log = logging.getLogger("cryohpc.scheduler")

CHECK_EVERY_S = 2.0


class PendingKills:
    def __init__(self, store: Store, lanes: Callable[[], dict[str, Lane]]):
        self.store, self.lanes = store, lanes
        self._next_check = 0.0

    def retry(self) -> None:
        if time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + CHECK_EVERY_S
        with self.store.read() as tx:
            pending = tx.jobs_with_pending_kill()
            projects = {p.uid: p for p in tx.list_projects()} if pending else {}
        lanes = self.lanes()
        for seen in pending:
            lane = lanes.get(seen.run.lane or seen.queued_lane or "local")
            target = seen.run.resources.target if seen.run.resources else ""
            if lane is None or (isinstance(lane, NodeLane) and target in lane.unavailable()):
                continue
            try:
                handle = RunHandle.of(seen)
                if handle.pid is None and handle.cluster_job_id is None:  # killed mid-launch: find it
                    found = lane.find(request_for(seen, projects[seen.project_uid], seen.run.resources or Resources(),
                                                  seen.run.tag)) if seen.run.tag else None
                    handle = replace(handle, pid=found.pid, pid_start=found.pid_start,
                                     cluster_job_id=found.cluster_job_id) if found else None
                if handle is not None:
                    lane.kill(handle)
            except CryohpcError as err:
                log.info("kill of %s still pending: %s", seen.ref, err)
                continue
            with self.store.write() as tx:
                job = tx.get_job(seen.project_uid, seen.uid, include_deleted=True)
                job.run.kill_pending = False
                job.run.reason = "stopped once its worker answered again"
                tx.put_job(job)
            log.info("stopped %s, killed while its worker could not be reached", seen.ref)

