"""A worker's events applied to its job record: status steps, progress, outputs held
aside until completion (a failed or killed job never shows partial results)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..events import CACHE, COMPLETED, FAILED, OUTPUT, PROGRESS, RUNNING, STARTED, WAITING
from ..model import Job, OutputGroup, OutputResult, set_status
from ..status import TRANSITIONS, JobStatus


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
    summaries = {ev["group"]: ev.get("summary") or {} for ev in job.run.pending_outputs}
    for name, group in groups.items():
        group.results = list(produced.get(name, {}).values())
        group.num_items = counts.get(name, 0)
        group.summary = summaries.get(name, {})
    job.outputs = list(groups.values())
    job.run.pending_outputs = []


def apply_event(job: Job, ev: dict[str, Any]) -> None:
    kind = ev.get("type")
    if kind == STARTED:
        _advance(job, JobStatus.STARTED)
    elif kind == RUNNING:
        _advance(job, JobStatus.RUNNING)
    elif kind == WAITING:
        _advance(job, JobStatus.WAITING)
    elif kind == PROGRESS:
        job.run.progress = {k: v for k, v in ev.items() if k != "type"}
    elif kind == CACHE:
        job.run.cache_path_used = ev.get("path")
    elif kind == OUTPUT:
        job.run.pending_outputs = [*job.run.pending_outputs, ev]
    elif kind == COMPLETED and JobStatus.COMPLETED in TRANSITIONS[job.status]:
        register_outputs(job)
        job.run.exit_code = 0
        set_status(job, JobStatus.COMPLETED)
    elif kind == FAILED and JobStatus.FAILED in TRANSITIONS[job.status]:
        job.add_run_error(ev.get("message", "failed"), ev.get("traceback", ""))
        job.run.pending_outputs = []
        set_status(job, JobStatus.FAILED)


def fail(job: Job, message: str) -> None:
    job.add_run_error(message)
    job.run.pending_outputs = []
    set_status(job, JobStatus.FAILED)
