"""Launching a queued job in two phases, so no database write waits on a lane.

1. Claim (short write): the job, still queued, gets a fresh run record with its lane,
   resources and tag, marked ``launch_uncertain``.
2. Launch (no transaction): write ``job.json``, start the worker or submit the script.
   When the claim found an earlier launch of unknown outcome (a lost submit answer, a
   master that died mid-launch), the lane is first asked for it by tag (``find``); only
   an answer of "none" lets a new launch start, a failed look-up leaves the job waiting.
3. Record (short write): the handle, or the reason the job waits or failed. A job killed
   while its launch ran is stopped right after.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import removals
from ..builder import job_dir_abs, resolve_inputs
from ..errors import CryohpcError, TransientError
from ..exitcode import STOP_REQUEST_NAME
from ..jobfile import JobFile, OutputSpecFile
from ..jobtypes import get_jobtype
from ..lanes import (
    BatchLane,
    Lane,
    LaneUnreachable,
    Launched,
    LaunchRequest,
    LaunchUnconfirmed,
    NodeLane,
    RunHandle,
    job_tag,
    worker_env,
)
from ..model import Job, Project, Resources, Run, now, set_status
from ..status import JobStatus, QueueStatus
from ..store import Store
from .job_events import fail

log = logging.getLogger("cryohpc.scheduler")


def keep_previous_events(job_dir: Path) -> None:
    """A restarted job starts a fresh events.jsonl; the earlier run's becomes events.N.jsonl
    (and a stop request the earlier run answered goes)."""
    (job_dir / STOP_REQUEST_NAME).unlink(missing_ok=True)  # the last run's request is answered
    current = job_dir / "events.jsonl"
    if current.exists():
        n = 1
        while (job_dir / f"events.{n}.jsonl").exists():
            n += 1
        current.rename(job_dir / f"events.{n}.jsonl")


def _less_than_asked(need: Resources, given: Resources) -> str | None:
    """Say so when a node lane smaller than the job's wish runs it on all it has."""
    short = [f"{given.cpus} of the {need.cpus} CPUs"] if given.cpus < need.cpus else []
    short += [f"{given.ram_gb:g} of the {need.ram_gb:g} GB"] if given.ram_gb < need.ram_gb - 1e-9 else []
    return f"runs with {' and '.join(short)} asked: all the lane has" if short else None


def request_for(job: Job, project: Project, resources: Resources, tag: str, *, command: list[str] | None = None,
                env: dict[str, str] | None = None, custom: dict | None = None,
                self_launched: bool = False) -> LaunchRequest:
    """The launch request of ``job``; without a command, enough for ``Lane.find`` to look
    for a run of it."""
    return LaunchRequest(project_uid=job.project_uid, job_uid=job.uid, job_type=job.type, job_title=job.title,
                         job_creator=job.created_by, job_dir=job_dir_abs(project, job),
                         project_dir=Path(project.project_dir), command=command or [], env=env or {},
                         resources=resources, tag=tag, custom=custom or {}, self_launched=self_launched)


class Launcher:
    def __init__(self, store: Store, instance_uid: str, heartbeat_interval_s: float, wake_path: Path | None = None):
        self.store, self.instance_uid, self.heartbeat_interval_s = store, instance_uid, heartbeat_interval_s
        self.wake_path = wake_path

    def launch(self, seen: Job, lane: Lane, alloc: Resources) -> bool:
        """Launch one queued job; True when its worker runs (or was found running).

        Raises:
            CryohpcError: this job cannot run as it stands (the caller fails it).
        """
        prepared = self._prepare(seen, lane, alloc)
        if prepared is None:
            return False
        request, job_file, retry = prepared
        if not self._claim(seen, lane, request):
            return False
        leftover = removals.finish(self.store, seen.project_uid, seen.uid)
        if leftover is not None:  # the earlier run's files must be gone before this one writes
            self._settle(seen, request, QueueStatus.ACTIVELY_QUEUED, f"not started, will retry: {leftover}")
            return False
        try:
            launched = lane.find(request) if retry else None
            if launched is None:
                job_file.write(request.job_dir)
                keep_previous_events(request.job_dir)
                launched = lane.launch(request)
        except LaunchUnconfirmed as err:
            self._settle(seen, request, QueueStatus.ACTIVELY_QUEUED, f"{err}; will look for it before retrying",
                         uncertain=True)
            return False
        except TransientError as err:  # nothing started (or the lane could not say whether)
            self._settle(seen, request, QueueStatus.WAITING_UNREACHABLE, f"not started, will retry: {err}",
                         uncertain=retry and isinstance(err, LaneUnreachable))
            return False
        except (CryohpcError, OSError) as err:  # refused, or job.json / the script could not be written
            self._settle(seen, request, None, f"could not launch: {err}", failed=True)
            return False
        return self._record(seen, lane, request, launched)

    def _prepare(self, seen: Job, lane: Lane, alloc: Resources) -> tuple[LaunchRequest, JobFile, bool] | None:
        """Everything the launch needs, read in one snapshot (no write lock)."""
        with self.store.read() as tx:
            job = tx.get_job(seen.project_uid, seen.uid)
            if job.status != JobStatus.QUEUED:
                return None
            project = tx.get_project(job.project_uid)
            spec = get_jobtype(job.type)
            inputs = resolve_inputs(tx, job, project)
        job_dir = job_dir_abs(project, job)
        params = spec.resolve_params(project.default_params, job.params)
        custom = (lane.custom_values(project.cluster_custom_vars, job.cluster_job_custom_vars)
                  if isinstance(lane, BatchLane) else {})
        env = worker_env(None if isinstance(lane, BatchLane) else alloc.gpu_ids)
        worker_ranks = 1 if spec.self_launched else alloc.mpi_ranks
        request = request_for(job, project, alloc, job_tag(self.instance_uid, job.project_uid, job.uid),
                              command=lane.worker_command(job_dir, worker_ranks, alloc.target), env=env,
                              custom=custom, self_launched=spec.self_launched)
        job_file = JobFile(
            instance_uid=self.instance_uid, project_uid=job.project_uid, job_uid=job.uid, type=job.type,
            title=job.title, params=params, project_dir=str(Path(project.project_dir).resolve()),
            job_dir=str(job_dir), inputs=inputs,
            outputs=[OutputSpecFile(name=g.name, type=g.type, passthrough_input=g.passthrough_input)
                     for g in spec.outputs],
            resources=alloc, heartbeat_interval_s=self.heartbeat_interval_s,
            cache=lane.cache_settings(alloc.target), created_at=now(),
            wake_path=str(self.wake_path) if self.wake_path else None, jobtype=spec.declared,
            program_launcher=lane.program_launcher(alloc.target) if spec.self_launched else None,
            oversubscribe=isinstance(lane, NodeLane) and lane.oversubscribe)
        return request, job_file, job.run.launch_uncertain

    def _claim(self, seen: Job, lane: Lane, request: LaunchRequest) -> bool:
        with self.store.write() as tx:
            job = tx.get_job(seen.project_uid, seen.uid)
            if job.status != JobStatus.QUEUED:
                return False
            job.run = Run(lane=lane.name, resources=request.resources, tag=request.tag, launch_uncertain=True,
                          reason="launching")
            tx.put_job(job)
        return True

    def _kill_later(self, seen: Job, reason: str) -> None:
        with self.store.write() as tx:
            job = tx.get_job(seen.project_uid, seen.uid, include_deleted=True)
            job.run.kill_pending, job.run.reason = True, reason
            tx.put_job(job)

    def _settle(self, seen: Job, request: LaunchRequest, queue_status: QueueStatus | None, reason: str, *,
                uncertain: bool = False, failed: bool = False) -> None:
        """Record a launch that did not start the job: it waits (uncertain: to be looked
        for before the next try) or it failed."""
        with self.store.write() as tx:
            job = tx.get_job(seen.project_uid, seen.uid, include_deleted=True)
            if job.status != JobStatus.QUEUED or job.run.tag != request.tag:
                return
            job.run.launch_uncertain = uncertain
            job.run.reason = reason
            if failed:
                fail(job, reason)
            else:
                job.queue_status = queue_status
            tx.put_job(job)

    def _record(self, seen: Job, lane: Lane, request: LaunchRequest, launched: Launched) -> bool:
        with self.store.write() as tx:
            job = tx.get_job(seen.project_uid, seen.uid, include_deleted=True)
            run = job.run
            run.launch_uncertain = False
            run.pid, run.pid_start, run.host = launched.pid, launched.pid_start, launched.host
            run.cluster_job_id = launched.cluster_job_id
            run.launched_at = run.heartbeat_at = now()
            run.reason = ("found running after a launch of unknown outcome" if launched.adopted
                          else _less_than_asked(job.resources_needed, request.resources))
            if launched.script is not None:
                run.submission_script = launched.script
                run.cluster_status = "submitted"
            still_wanted = job.status == JobStatus.QUEUED
            if still_wanted:
                set_status(job, JobStatus.LAUNCHED)
                job.queue_status = QueueStatus.LAUNCHED
            tx.put_job(job)
        if not still_wanted:  # killed (or unqueued) while it launched: stop what just started
            log.info("%s left the queue while launching; stopping its run", seen.ref)
            try:
                lane.kill(RunHandle.of(job, request.job_dir))
            except CryohpcError as err:
                self._kill_later(job, f"stopping the run it started failed, will retry: {err}")
            return False
        log.info("launched %s on lane %s (%s)", seen.ref, lane.name,
                 f"cluster job {launched.cluster_job_id}" if launched.cluster_job_id else f"pid {launched.pid}")
        return True
