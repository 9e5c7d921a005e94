"""The scheduler's own figures for runs that ended (SLURM: ``sacct`` from slurmdbd):
elapsed time, CPU time, peak memory of the largest step, the TRES billed. Asked once per
lane per pass for every run still without them, for ``WINDOW_S`` after the run ended
(the scheduler records a job's end a moment after it), never inside a transaction; a
lane whose scheduler keeps no accounting is asked again at most every ``RETRY_S``."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable

from ..lanes import BatchLane, Lane, RunHandle
from ..model import Job, now
from ..status import JobStatus
from ..store import Store

log = logging.getLogger("cryohpc.scheduler")

WINDOW_S = 600.0
RETRY_S = 60.0
LEAST_GAP_S = 2.0  # between two questions to one lane (or its poll interval, if longer)


def accounting_due(tx) -> list[Job]:
    """Jobs with a cluster run that ended in the window and has no scheduler figures yet
    (an indexed query over jobs that changed status lately)."""
    since = now() - WINDOW_S
    out = []
    for status in JobStatus:
        for job in tx.jobs_entered_since(status, since):
            if any(r.cluster_job_id and r.scheduler is None and (r.ended_at or 0) > since for r in job.runs):
                out.append(job)
    return out


class Accountant:
    def __init__(self, store: Store, lanes: Callable[[], dict[str, Lane]]):
        self.store, self.lanes = store, lanes
        self._failed_at: dict[str, float] = {}
        self._asked_at: dict[str, float] = {}

    def collect(self, jobs: list[Job]) -> None:
        wanted: dict[str, dict[str, tuple[Job, int]]] = defaultdict(dict)  # lane -> cluster id -> (job, run index)
        since = now() - WINDOW_S
        for job in jobs:
            for i, run in enumerate(job.runs):
                if run.cluster_job_id and run.scheduler is None and (run.ended_at or 0) > since and run.lane:
                    wanted[run.lane][run.cluster_job_id] = (job, i)
        lanes = self.lanes()
        for lane_name, runs in wanted.items():
            lane = lanes.get(lane_name)
            t = time.monotonic()
            if not isinstance(lane, BatchLane) or t - self._failed_at.get(lane_name, -RETRY_S) < RETRY_S \
                    or t - self._asked_at.get(lane_name, -1e9) < max(LEAST_GAP_S, lane.poll_interval_s):
                continue
            self._asked_at[lane_name] = t
            handles = [RunHandle(ref=f"{job.project_uid} {job.uid}", cluster_job_id=cid, tag=None)
                       for cid, (job, _) in runs.items()]
            try:
                figures = lane.accounting(handles)
            except Exception as err:  # noqa: BLE001 - no accounting there: the worker's own figures stand
                self._failed_at[lane_name] = time.monotonic()
                log.info("lane %s: no scheduler accounting (%s)", lane_name, err)
                continue
            for cid, (job, index) in runs.items():
                if cid in figures:
                    self._record(job, index, cid, figures[cid])

    def _record(self, seen: Job, index: int, cluster_job_id: str, figures: dict) -> None:
        with self.store.write() as tx:
            job = tx.get_job(seen.project_uid, seen.uid, include_deleted=True)
            if index >= len(job.runs) or job.runs[index].cluster_job_id != cluster_job_id:
                return
            runs = list(job.runs)
            runs[index] = runs[index].model_copy(update={"scheduler": figures})
            job.runs = runs
            tx.put_job(job)
