"""What jobs cost, summed from their run histories: every ended run (completed, failed,
killed or requeued, deleted jobs too) counts once, with the worker's own figures (CPU
time, peak memory, GPU time per rank) and what it held (wall time × CPUs or GPUs given)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from .model import Job, RunRecord

KEYS = ("project", "user", "lane", "type")


@dataclass(frozen=True)
class UsageFilter:
    project: str | None = None
    user: str | None = None
    lane: str | None = None
    since: float | None = None  # runs that ended at or after this time


def _key(job: Job, run: RunRecord, field: str) -> str:
    return {"project": job.project_uid, "user": run.queued_by or job.created_by or "unknown",
            "lane": run.lane or "?", "type": job.type}[field]


def run_figures(run: RunRecord) -> dict[str, float]:
    """One run's figures: hours held (wall × CPUs, wall × GPUs given) and used (the
    ranks' own CPU and GPU time), peak memory of its largest rank."""
    wall_s = max(0.0, (run.ended_at or 0) - (run.started_at or run.launched_at or run.ended_at or 0))
    res = run.resources
    return {
        "wall_hours": wall_s / 3600,
        "cpu_hours": sum(u.get("cpu_s", 0.0) for u in run.usage) / 3600,
        "cpu_hours_held": wall_s * (res.cpus if res else 1) / 3600,
        "gpu_hours": sum(u.get("gpu_s", 0.0) for u in run.usage) / 3600,
        "gpu_hours_held": wall_s * (res.gpus if res else 0) / 3600,
        "peak_rank_memory_gb": max((u.get("max_rss_bytes", 0) for u in run.usage), default=0) / 1e9,
        # the scheduler's accounting, where it keeps one (0 where it does not)
        "scheduler_hours": (sched.get("elapsed_s", 0.0) if (sched := run.scheduler or {}) else 0.0) / 3600,
        "scheduler_cpu_hours": sched.get("cpu_s", 0.0) / 3600,
        "billed_hours": sched.get("elapsed_s", 0.0) * sched.get("billing", 0.0) / 3600,
    }


def summarize(jobs: list[Job], wanted: UsageFilter, by: tuple[str, ...] = KEYS) -> list[dict[str, Any]]:
    """One row per combination of the ``by`` keys, sorted by them."""
    unknown = set(by) - set(KEYS)
    if unknown:
        raise ValueError(f"cannot group by {', '.join(sorted(unknown))} (choose from {', '.join(KEYS)})")
    rows: dict[tuple, dict[str, Any]] = {}
    counted: dict[tuple, set[str]] = defaultdict(set)
    for job in jobs:
        if wanted.project and job.project_uid != wanted.project:
            continue
        for run in job.runs:
            if wanted.since is not None and (run.ended_at or 0) < wanted.since:
                continue
            if wanted.user and _key(job, run, "user") != wanted.user:
                continue
            if wanted.lane and run.lane != wanted.lane:
                continue
            key = tuple(_key(job, run, k) for k in by)
            figures = run_figures(run)
            row = rows.setdefault(key, {**dict(zip(by, key, strict=True)), "jobs": 0, "runs": 0,
                                        **{name: 0.0 for name in figures}})
            row["runs"] += 1
            for name, value in figures.items():
                row[name] = max(row[name], value) if name.startswith("peak") else row[name] + value
            counted[key].add(f"{job.project_uid} {job.uid}")
    for key, row in rows.items():
        row["jobs"] = len(counted[key])
    return [rows[k] for k in sorted(rows)]
