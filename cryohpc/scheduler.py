"""The master's work, one pass at a time: follow running jobs, launch queued ones.

Following a job means asking its lane whether the run is alive (one batched poll per
lane), then applying the worker's new events. Polling first and reading events second
means a worker that reported and exited is never mistaken for one that died silently.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from .builder import job_dir_abs, resolve_inputs
from .errors import CryohpcError, TransientError, UserError
from .events import (
    CACHE,
    COMPLETED,
    FAILED,
    OUTPUT,
    PROGRESS,
    RUNNING,
    STARTED,
    WAITING,
    read_events,
)
from .instance import Instance
from .jobfile import JobFile, OutputSpecFile
from .jobtypes import get_jobtype
from .lanes import Lane, PollResult, RunState
from .lanes.runner import CommandError
from .lanes.ssh import SshRefused
from .lanes.workers import RemoteCommandError
from .model import Job, OutputGroup, OutputResult, Resources, now, set_status
from .status import TRANSITIONS, JobStatus, QueueStatus

log = logging.getLogger("cryohpc.scheduler")

_ENDED_CODES = ("TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "CANCELLED", "PREEMPTED", "FAILED", "BOOT_FAIL",
                 "DEADLINE")
ACTIVE = [JobStatus.LAUNCHED, JobStatus.STARTED, JobStatus.RUNNING, JobStatus.WAITING]


def _advance(job: Job, new: JobStatus) -> None:
    """Apply a status reported by a worker when the table allows it; a repeated or
    late report (e.g. 'running' after 'completed') is ignored."""
    if new in TRANSITIONS[job.status]:
        set_status(job, new)


def register_outputs(job: Job) -> None:
    """Promote outputs a worker reported into the job's output groups (on completion only,
    so a failed job never shows partial results)."""
    groups = {g.name: g for g in job.outputs}
    produced: dict[str, dict[str, OutputResult]] = defaultdict(dict)
    counts: dict[str, int] = {}
    for ev in job.pending_outputs:
        name = ev["group"]
        if name not in groups:
            groups[name] = OutputGroup(name=name, type=ev.get("item_type", "unknown"))
        counts[name] = int(ev.get("num_items", 0))
        for r in ev.get("results", []):
            res = produced[name].get(r["name"]) or OutputResult(
                name=r["name"], type=r.get("type", r["name"]), passthrough=bool(r.get("passthrough"))
            )
            res.metafiles = [*res.metafiles, r["path"]]
            res.num_items = counts[name]
            produced[name][r["name"]] = res
    summaries = {ev["group"]: ev.get("summary") or {} for ev in job.pending_outputs}
    for name, group in groups.items():
        group.results = list(produced.get(name, {}).values())
        group.num_items = counts.get(name, 0)
        group.summary = summaries.get(name, {})
    job.outputs = list(groups.values())
    job.pending_outputs = []


def apply_event(job: Job, ev: dict[str, Any]) -> None:
    kind = ev.get("type")
    if kind == STARTED:
        _advance(job, JobStatus.STARTED)
    elif kind == RUNNING:
        _advance(job, JobStatus.RUNNING)
    elif kind == WAITING:
        _advance(job, JobStatus.WAITING)
    elif kind == PROGRESS:
        job.progress = {k: v for k, v in ev.items() if k != "type"}
    elif kind == CACHE:
        job.cache_path_used = ev.get("path")
    elif kind == OUTPUT:
        job.pending_outputs = [*job.pending_outputs, ev]
    elif kind == COMPLETED and JobStatus.COMPLETED in TRANSITIONS[job.status]:
        register_outputs(job)
        job.exit_code = 0
        set_status(job, JobStatus.COMPLETED)
    elif kind == FAILED and JobStatus.FAILED in TRANSITIONS[job.status]:
        job.add_run_error(ev.get("message", "failed"), ev.get("traceback", ""))
        job.pending_outputs = []
        set_status(job, JobStatus.FAILED)


def fail(job: Job, message: str) -> None:
    job.add_run_error(message)
    job.pending_outputs = []
    set_status(job, JobStatus.FAILED)


def _keep_previous_events(job_dir: Path) -> None:
    """A restarted job starts a fresh events.jsonl; the earlier run's becomes events.N.jsonl."""
    current = job_dir / "events.jsonl"
    if current.exists():
        n = 1
        while (job_dir / f"events.{n}.jsonl").exists():
            n += 1
        current.rename(job_dir / f"events.{n}.jsonl")


def _take(used: dict[tuple[str, str], Resources], lane: str, alloc: Resources) -> None:
    u = used[(lane, alloc.target)]
    u.cpus += alloc.cpus
    u.ram_gb += alloc.ram_gb
    u.gpu_ids = [*u.gpu_ids, *alloc.gpu_ids]


def dir_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            continue
    return total


class Scheduler:
    def __init__(self, inst: Instance, lanes: dict[str, Lane] | None = None):
        self.inst = inst
        self.store = inst.store
        self._fixed_lanes = lanes is not None
        self._last_poll: dict[str, tuple[float, dict[str, PollResult]]] = {}
        self._config_stamp: tuple = ()
        self._target_states: dict[tuple[str, str], tuple] = {}
        self._next_kill_check = 0.0
        self.lanes: dict[str, Lane] = lanes if lanes is not None else {}
        self.reload_lanes()

    def reload_lanes(self) -> None:
        """Pick up site-config changes; a lane whose config did not change keeps its object
        (the local lane holds its child processes)."""
        if self._fixed_lanes:
            return
        folder = self.inst.paths.site_configs
        files = sorted(folder.glob("*.y*ml")) if folder.is_dir() else []
        stamp = tuple((str(f), f.stat().st_mtime_ns) for f in files)
        if stamp == self._config_stamp and self.lanes:
            return
        try:
            fresh = self.inst.build_lanes()
        except CryohpcError as err:
            log.error("site configs not reloaded, keeping the lanes in use: %s", err)
            self._config_stamp = stamp
            return
        for name, lane in fresh.items():
            old = self.lanes.get(name)
            if old is not None and getattr(old, "cfg", None) == getattr(lane, "cfg", None):
                fresh[name] = old
        self.lanes, self._config_stamp = fresh, stamp

    def step(self) -> None:
        self.reload_lanes()
        self.monitor()
        self.finish_pending_kills()
        self.launch_ready()
        self.record_target_states()

    PENDING_KILL_CHECK_S = 2.0

    def finish_pending_kills(self) -> None:
        """Stop jobs killed while their SSH worker was unreachable, once it answers
        (looked for every few seconds: it reads every killed job)."""
        if time.monotonic() < self._next_kill_check:
            return
        self._next_kill_check = time.monotonic() + self.PENDING_KILL_CHECK_S
        with self.store.read() as tx:
            pending = [j for j in tx.list_jobs(statuses=[JobStatus.KILLED]) if j.kill_pending]
        for seen in pending:
            lane = self.lanes.get(seen.queued_lane or "local")
            target = seen.resources_allocated.target if seen.resources_allocated else ""
            if lane is None or target in lane.unavailable():
                continue
            try:
                lane.kill(seen)
            except CryohpcError as err:
                log.info("kill of %s still pending: %s", seen.ref, err)
                continue
            with self.store.write() as tx:
                job = tx.get_job(seen.project_uid, seen.uid, include_deleted=True)
                job.kill_pending = False
                job.cluster_job_status_reason = "stopped once its worker answered again"
                tx.put_job(job)
            log.info("stopped %s, killed while its worker was unreachable", seen.ref)

    def record_target_states(self) -> None:
        """Publish worker targets' reachability (for 'cryohpc worker list'), on change only."""
        changed = []
        for lane in self.lanes.values():
            for target, (state, since, detail) in lane.target_states().items():
                key = (lane.name, target)
                if self._target_states.get(key, (None,))[0] != state:
                    changed.append((key, state, since or now(), detail))
        if changed:
            with self.store.write() as tx:
                for (lane_name, target), state, since, detail in changed:
                    tx.put_worker_state(lane_name, target, state, since, detail)
                    self._target_states[(lane_name, target)] = (state, since, detail)
            for (lane_name, target), state, _, detail in changed:
                log.log(logging.WARNING if state == "unreachable" else logging.INFO,
                        "worker %s of lane %s is %s %s", target, lane_name, state, detail)

    EXPLAIN_WINDOW_S = 300.0

    def _recently_failed(self, tx) -> list[Job]:
        """Cluster jobs failed in the last few minutes whose error does not yet say what
        the scheduler did: a job killed at its time limit reports "terminated by signal"
        before the scheduler lists it as TIMEOUT."""
        t = now()
        return [j for j in tx.list_jobs(statuses=[JobStatus.FAILED])
                if j.cluster_job_id and t - j.status_times.get("failed", 0) < self.EXPLAIN_WINDOW_S
                and j.errors_run and not j.errors_run[-1].message.startswith("the scheduler")]

    def _explain(self, seen: Job, poll: PollResult) -> None:
        """Name the scheduler's verdict in a recently failed job's error, once known."""
        if (seen.cluster_job_status or "").startswith(_ENDED_CODES):
            status, detail = seen.cluster_job_status, f"the scheduler ended the job: {seen.cluster_job_status}"
        elif poll.state == RunState.EXITED and poll.detail.startswith("the scheduler ended"):
            status, detail = poll.scheduler_status, poll.detail
        else:
            return
        with self.store.write() as tx:
            job = tx.get_job(seen.project_uid, seen.uid)
            last = job.errors_run[-1]
            job.cluster_job_status = status
            job.errors_run = [*job.errors_run[:-1],
                              last.model_copy(update={"message": f"{detail} (worker: {last.message})"})]
            tx.put_job(job)

    def monitor(self) -> None:
        with self.store.read() as tx:
            active = tx.list_jobs(statuses=ACTIVE)
            failed = self._recently_failed(tx)
            projects = {p.uid: p for p in tx.list_projects()}
        by_lane: dict[str, list[Job]] = defaultdict(list)
        for job in active:
            by_lane[job.queued_lane or "local"].append(job)
        to_explain: dict[str, list[Job]] = defaultdict(list)
        for job in failed:
            to_explain[job.queued_lane or "local"].append(job)
        for lane_name in set(by_lane) | set(to_explain):
            lane = self.lanes.get(lane_name)
            jobs, late = by_lane.get(lane_name, []), to_explain.get(lane_name, [])
            if lane is not None and not lane.self_scheduling:
                late = []
            polls = self._poll(lane, jobs + late, projects) if lane and (jobs or late) else {}
            for job in jobs:
                poll = polls.get(job.ref, PollResult(RunState.UNKNOWN, detail=f"lane {lane_name} is not configured"))
                try:
                    self._follow(job, projects[job.project_uid], poll)
                except CryohpcError as err:
                    log.error("following %s: %s", job.ref, err)
            for job in late:
                if job.ref in polls:
                    self._explain(job, polls[job.ref])

    def _poll(self, lane: Lane, jobs: list[Job], projects: dict) -> dict[str, PollResult]:
        """One status query for all of a lane's jobs, at most every ``poll_interval_s`` for
        lanes that set one; in between the last answer stands (events are still read)."""
        interval = lane.poll_interval_s
        last_t, last = self._last_poll.get(lane.name, (0.0, {}))
        known = all(j.ref in last for j in jobs)
        if interval and known and time.monotonic() - last_t < interval:
            return last
        dirs = {j.ref: job_dir_abs(projects[j.project_uid], j) for j in jobs}
        polls = lane.poll(jobs, dirs)
        self._last_poll[lane.name] = (time.monotonic(), polls)
        return polls

    def _nothing_new(self, job: Job, poll: PollResult) -> bool:
        if poll.state == RunState.EXITED:
            return False
        if poll.scheduler_status is not None and poll.scheduler_status != job.cluster_job_status:
            return False
        if poll.state == RunState.UNREACHABLE:
            return job.cluster_job_status_reason == poll.detail  # record a new reason once
        if poll.state == RunState.PENDING:
            return True
        return job.heartbeat_at is None or now() - job.heartbeat_at <= self.inst.config.heartbeat_timeout_s

    def _follow(self, seen: Job, project, poll: PollResult) -> None:
        job_dir = job_dir_abs(project, seen)
        events, offset = read_events(job_dir, seen.events_offset)
        if not events and self._nothing_new(seen, poll):
            return  # no write transaction for a job whose state did not move
        presumed_dead: Job | None = None
        with self.store.write() as tx:
            job = tx.get_job(seen.project_uid, seen.uid, include_deleted=True)
            if not job.status.active or job.events_offset != seen.events_offset:
                return  # killed, or followed by someone else, meanwhile
            for ev in events:
                apply_event(job, ev)
                if job.status.final:
                    break
            job.events_offset = offset
            t = now()
            if events or poll.state == RunState.PENDING or poll.scheduler_status != job.cluster_job_status:
                job.heartbeat_at = t  # nothing is expected from a job still queued at the scheduler
            if poll.scheduler_status is not None:
                job.cluster_job_status = poll.scheduler_status
                job.cluster_job_status_reason = poll.detail or None
            elif poll.state == RunState.UNREACHABLE:
                job.cluster_job_status_reason = poll.detail
            if not job.status.final:
                if poll.state == RunState.EXITED:
                    code = "unknown" if poll.exit_code is None else poll.exit_code
                    job.exit_code = poll.exit_code
                    cause = poll.detail if poll.detail and "scheduler" in poll.detail else ""
                    fail(job, cause or f"worker exited (exit code {code}) without reporting completion; see job.log")
                elif poll.state in (RunState.UNREACHABLE, RunState.PENDING):
                    pass  # the lane did not answer, or the job waits at the scheduler: no verdict
                elif job.heartbeat_at is not None and t - job.heartbeat_at > self.inst.config.heartbeat_timeout_s:
                    fail(job, f"no heartbeat from the worker for {t - job.heartbeat_at:.0f} s "
                              f"(limit {self.inst.config.heartbeat_timeout_s:.0f} s); presumed dead")
                    presumed_dead = job
            if job.status.final:
                job.job_dir_size = dir_size(job_dir)
            tx.put_job(job)
        if presumed_dead is not None:  # outside the transaction: a kill may take seconds
            lane = self.lanes.get(presumed_dead.queued_lane or "local")
            if lane is not None:
                lane.kill(presumed_dead)

    # -- launching queued jobs --------------------------------------------------------
    def launch_ready(self) -> None:
        with self.store.read() as tx:
            queued = tx.list_jobs(statuses=[JobStatus.QUEUED])
            active = tx.list_jobs(statuses=ACTIVE)
            status_of = {(j.project_uid, j.uid): j.status for j in tx.list_jobs()}
        if not queued:
            return
        queued.sort(key=lambda j: (-j.priority, j.status_times.get("queued", 0.0), j.created_at))
        used: dict[tuple[str, str], Resources] = defaultdict(lambda: Resources(cpus=0, gpus=0, ram_gb=0))
        for j in active:
            _take(used, j.queued_lane or "local", j.resources_allocated or j.resources_needed)
        blocked: set[str] = set()  # lanes where a higher-priority job waits for resources
        for job in queued:
            try:
                self._place(job, status_of, used, blocked)
            except TransientError as err:  # something outside did not answer: hold this job only
                self._hold_queued(job, f"not started, will retry: {err}")
            except CryohpcError as err:  # this job cannot run as it stands (type gone, lane config broken)
                self._fail_queued(job, f"could not launch: {err}")

    def _place(self, job: Job, status_of: dict, used: dict[tuple[str, str], Resources], blocked: set[str]) -> None:
        """Wait, fail or launch one queued job; ``used`` and ``blocked`` carry what jobs
        before it in priority order took and which lanes they hold up."""
        lane_name = job.queued_lane or "local"
        parent_states = [status_of.get((job.project_uid, p)) for p in job.parents]
        if any(s in (JobStatus.FAILED, JobStatus.KILLED) for s in parent_states):
            self._set_queue_status(job, QueueStatus.WAITING_PARENT_FAILED)
            return
        if any(s != JobStatus.COMPLETED for s in parent_states):
            self._set_queue_status(job, QueueStatus.WAITING_INPUTS)
            return
        lane = self.lanes.get(lane_name)
        if lane is None:
            self._fail_queued(job, f"lane {lane_name!r} is not configured (see 'cryohpc lane list')")
            return
        if lane.self_scheduling:  # the batch scheduler queues and places it
            need = job.resources_needed
            self._launch(job, lane, need.model_copy(update={"gpu_ids": []}))
            return
        if lane_name in blocked:
            self._set_queue_status(job, QueueStatus.WAITING_RESOURCES)
            return
        targets = lane.targets()
        if job.queued_target:
            if job.queued_target not in targets:
                self._fail_queued(job, f"worker target {job.queued_target!r} is no longer in lane {lane_name!r}")
                return
            targets = {job.queued_target: targets[job.queued_target]}
        down = lane.unavailable()
        if targets and all(t in down for t in targets):
            self._set_queue_status(job, QueueStatus.WAITING_UNREACHABLE)
            return
        alloc = None
        for name, cap in targets.items():
            if name not in down:
                alloc = self._fit(job, cap, used[(lane_name, name)])
                if alloc is not None:
                    alloc.target = name
                    break
        if alloc is None:
            blocked.add(lane_name)
            self._set_queue_status(job, QueueStatus.WAITING_RESOURCES)
            return
        if self._launch(job, lane, alloc):
            _take(used, lane_name, alloc)

    @staticmethod
    def _fit(job: Job, cap: Resources, used: Resources) -> Resources | None:
        need = job.resources_needed
        cpus = min(need.cpus, cap.cpus)  # a lane smaller than the job's wish runs it on all it has
        ram = min(need.ram_gb, cap.ram_gb)
        if used.cpus + cpus > cap.cpus or used.ram_gb + ram > cap.ram_gb + 1e-9:
            return None
        free = [g for g in cap.gpu_ids if g not in used.gpu_ids]
        if job.queued_gpu_ids:
            if any(g not in free for g in job.queued_gpu_ids):
                return None
            gpus = list(job.queued_gpu_ids)
        else:
            if len(free) < need.gpus:
                return None
            gpus = free[: need.gpus]
        return Resources(cpus=cpus, ram_gb=ram, gpus=len(gpus), mpi_ranks=need.mpi_ranks, gpu_ids=gpus)

    def _if_still_queued(self, seen: Job, change) -> None:
        """Apply ``change`` to the stored job in one transaction, unless it left the queue
        since this pass read it (killed, cleared)."""
        with self.store.write() as tx:
            job = tx.get_job(seen.project_uid, seen.uid)
            if job.status == JobStatus.QUEUED:
                change(job)
                tx.put_job(job)

    def _set_queue_status(self, seen: Job, qs: QueueStatus) -> None:
        if seen.queue_status != qs:
            self._if_still_queued(seen, lambda job: setattr(job, "queue_status", qs))

    def _hold_queued(self, seen: Job, message: str) -> None:
        def hold(job: Job) -> None:
            job.queue_status = QueueStatus.WAITING_UNREACHABLE
            job.cluster_job_status_reason = message

        self._if_still_queued(seen, hold)

    def _fail_queued(self, seen: Job, message: str) -> None:
        self._if_still_queued(seen, lambda job: fail(job, message))

    def _launch(self, seen: Job, lane: Lane, alloc: Resources) -> bool:
        with self.store.write() as tx:
            job = tx.get_job(seen.project_uid, seen.uid)
            if job.status != JobStatus.QUEUED:
                return False
            project = tx.get_project(job.project_uid)
            job_dir = job_dir_abs(project, job)
            try:
                spec = get_jobtype(job.type)
                inputs = resolve_inputs(tx, job, project)
                params = spec.resolve_params(project.default_params, job.params)
                JobFile(
                    instance_uid=self.inst.config.instance_uid,
                    project_uid=job.project_uid,
                    job_uid=job.uid,
                    type=job.type,
                    title=job.title,
                    params=params,
                    project_dir=str(Path(project.project_dir).resolve()),
                    job_dir=str(job_dir),
                    inputs=inputs,
                    outputs=[OutputSpecFile(name=g.name, type=g.type, passthrough_input=g.passthrough_input)
                             for g in spec.outputs],
                    resources=alloc,
                    heartbeat_interval_s=self.inst.config.heartbeat_interval_s,
                    cache=lane.cache_settings(alloc.target),
                    created_at=now(),
                ).write(job_dir)
                _keep_previous_events(job_dir)
                env = {"PYTHONUNBUFFERED": "1"}
                if not lane.self_scheduling:
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in alloc.gpu_ids)
                command = lane.worker_command(job_dir, alloc.mpi_ranks, alloc.target)
                job.resources_allocated = alloc
                custom = {}
                if lane.self_scheduling:
                    custom = lane.custom_values(project.cluster_custom_vars, job.cluster_job_custom_vars)
                launched = lane.launch(job, job_dir, command, env, project_dir=Path(project.project_dir), custom=custom,
                                       target=alloc.target)
            except CommandError as err:
                if err.timed_out:  # maybe submitted: the next pass finds it by its tag
                    job.queue_status = QueueStatus.ACTIVELY_QUEUED
                    job.cluster_job_status_reason = f"submission not confirmed, will retry: {err}"
                    tx.put_job(job)
                    return False
                fail(job, f"submission failed: {err}")
                tx.put_job(job)
                return False
            except (TransientError, SshRefused) as err:  # the target did not answer: stay queued, retry
                job.queue_status = QueueStatus.WAITING_UNREACHABLE
                job.cluster_job_status_reason = f"not started, will retry: {err}"
                tx.put_job(job)
                return False
            except (UserError, OSError, RuntimeError, RemoteCommandError) as err:  # this job cannot run as it is
                fail(job, f"could not launch: {err}")
                tx.put_job(job)
                return False
            set_status(job, JobStatus.LAUNCHED)
            job.queue_status = QueueStatus.LAUNCHED
            job.resources_allocated = alloc
            job.events_offset = 0
            job.heartbeat_at = now()
            job.run_pid, job.run_pid_start, job.run_host = launched.pid, launched.pid_start, launched.host
            job.cluster_job_id = launched.cluster_job_id
            if launched.script is not None:
                job.cluster_job_submission_script = launched.script
                job.cluster_job_status = "submitted"
            tx.put_job(job)
            log.info("launched %s on lane %s (pid %s)", job.ref, lane.name, launched.pid)
            return True

