"""A worker's events applied to its job record: status steps, progress, outputs held
aside until completion (a failed or killed job never shows partial results)."""

from __future__ import annotations

import logging
import posixpath
from collections import defaultdict

from ..events import (
    CacheEvent,
    CompletedEvent,
    FailedEvent,
    OutputEvent,
    ProgressEvent,
    RunningEvent,
    StartedEvent,
    StoppedEvent,
    UsageEvent,
    WaitingEvent,
    WorkerEvent,
)
from ..model import Job, OutputGroup, OutputResult, set_status, update_last_run
from ..status import TRANSITIONS, JobStatus

log = logging.getLogger("cryohpc.scheduler")


def output_problem(job: Job, ev: OutputEvent) -> str | None:
    """Why a worker's output report cannot be registered: a group its job type does not
    declare, or a file outside the job's own directory."""
    if job.output(ev.group) is None:
        return f"output group {ev.group!r} is not one the job declares ({', '.join(g.name for g in job.outputs)})"
    for r in ev.results:
        path = posixpath.normpath(r.path)
        if posixpath.isabs(r.path) or not path.startswith(job.job_dir.rstrip("/") + "/") or "\x00" in r.path:
            return f"result {r.name!r} names {r.path!r}, outside the job's directory {job.job_dir}/"
    return None


def _advance(job: Job, new: JobStatus) -> None:
    """Apply a status reported by a worker when the table allows it; a repeated or
    late report (e.g. 'running' after 'completed') is ignored."""
    if new in TRANSITIONS[job.status]:
        set_status(job, new)


def register_outputs(job: Job) -> None:
    """Promote outputs a worker reported into the job's output groups."""
    groups = {g.name: g for g in job.outputs}
    produced: dict[str, dict[str, OutputResult]] = defaultdict(dict)
    counts: dict[str, int] = {}
    for ev in job.run.pending_outputs:
        name = ev.group
        if name not in groups:
            groups[name] = OutputGroup(name=name, type=ev.item_type)
        counts[name] = ev.num_items
        for r in ev.results:
            res = produced[name].get(r.name) or OutputResult(name=r.name, type=r.type or r.name,
                                                              passthrough=r.passthrough)
            res.metafiles = [*res.metafiles, r.path]
            res.num_items = counts[name]
            produced[name][r.name] = res
    summaries = {ev.group: ev.summary for ev in job.run.pending_outputs}
    for name, group in groups.items():
        group.results = list(produced.get(name, {}).values())
        group.num_items = counts.get(name, 0)
        group.summary = summaries.get(name, {})
    job.outputs = list(groups.values())
    job.run.pending_outputs = []


def apply_event(job: Job, ev: WorkerEvent, hold_signalled: bool = False) -> None:
    """``hold_signalled``: a worker ended by a signal is not failed yet; the scheduler that
    sent the signal says next whether it preempted the job or lost its node (a requeue)."""
    if isinstance(ev, UsageEvent):  # may come after the end (ranks other than the one that failed)
        mine = ev.model_dump(exclude={"type"})
        job.run.usage = [*(u for u in job.run.usage if u.get("rank") != ev.rank), mine]
        update_last_run(job, usage=job.run.usage)
    elif job.status.final:
        return  # the run is over: nothing else a worker says changes it
    elif isinstance(ev, StartedEvent):
        job.run.started_at = ev.t
        _advance(job, JobStatus.STARTED)
    elif isinstance(ev, StoppedEvent) and ev.by_signal:
        job.run.signalled = job.run.signalled or f"stopped at SIGTERM, checkpoints saved ({ev.reason})"
    elif isinstance(ev, StoppedEvent):
        job.run.stop_reason = job.run.stop_reason or ev.reason or "stopped on request"
    elif isinstance(ev, RunningEvent):
        _advance(job, JobStatus.RUNNING)
    elif isinstance(ev, WaitingEvent):
        _advance(job, JobStatus.WAITING)
    elif isinstance(ev, ProgressEvent):
        job.run.progress = ev.model_dump(exclude={"type", "t"})
    elif isinstance(ev, CacheEvent):
        job.run.cache_path_used = ev.path
        if ev.host:
            mine = dict(job.run.cache_use.get(ev.host) or {"path": ev.path, "copied_bytes": 0, "hits": 0,
                                                           "evicted": 0, "at": ev.t})
            for key in ("copied_bytes", "hits", "evicted"):
                mine[key] = mine.get(key, 0) + getattr(ev, key)
            job.run.cache_use = {**job.run.cache_use, ev.host: mine}
    elif isinstance(ev, OutputEvent):
        problem = output_problem(job, ev)
        if problem:  # a worker that reports what is not its own: refused, and said
            log.error("%s: worker output refused: %s", job.ref, problem)
            job.add_run_error(f"worker output refused: {problem}")
        else:
            job.run.pending_outputs = [*job.run.pending_outputs, ev]
    elif isinstance(ev, CompletedEvent) and JobStatus.COMPLETED in TRANSITIONS[job.status]:
        register_outputs(job)
        job.run.exit_code = 0
        set_status(job, JobStatus.COMPLETED)
    elif isinstance(ev, FailedEvent) and hold_signalled and ev.signal:
        job.run.signalled = job.run.signalled or ev.message
        job.run.reason = f"{ev.message}; waiting for the scheduler to say why"
    elif isinstance(ev, FailedEvent) and JobStatus.FAILED in TRANSITIONS[job.status]:
        job.add_run_error(ev.message, ev.traceback)
        set_status(job, JobStatus.FAILED)  # outputs reported so far stay aside: it may be marked complete


def fail(job: Job, message: str) -> None:
    """Outputs reported so far stay aside (unregistered): the job may be marked complete."""
    job.add_run_error(message)
    set_status(job, JobStatus.FAILED)
