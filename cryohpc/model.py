"""Typed records the master keeps: Project, Workspace, Job (CryoSPARC's fields that we use).

Models hold data only; what happens to them lives in ``builder``, ``actions`` and
``scheduler``.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .events import OutputEvent
from .resources import Resources
from .status import JobStatus, QueueStatus

MAX_RUN_ERRORS = 10


def now() -> float:
    return time.time()


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Project(Record):
    uid: str = Field(description="P1, P2...: never reused")
    title: str
    description: str = ""
    project_dir: str = Field(description="absolute directory holding the job directories")
    owner: str = ""
    created_at: float = Field(default_factory=now)
    archived: bool = Field(default=False, description="read-only: results browsable, nothing queued or changed")
    delete_intermediate_on_complete: bool = Field(
        default=True, description="clear a job's intermediate results when it completes (a job's own setting wins)")
    size_jobs: int | None = Field(default=None, description="bytes in job directories, last measured")
    size_other: int | None = Field(default=None, description="bytes in the project directory outside job directories")
    size_files: int | None = Field(default=None, description="files in the project directory, last measured")
    size_measured_at: float | None = None
    default_params: dict[str, Any] = Field(default_factory=dict, description="project-wide param defaults")
    cluster_custom_vars: dict[str, Any] = Field(
        default_factory=dict, description="custom variable values for cluster lanes (job values win)"
    )


class Workspace(Record):
    uid: str = Field(description="W1, W2... within the project")
    project_uid: str
    title: str
    description: str = ""
    created_at: float = Field(default_factory=now)


class SlotRef(Record):
    """One result of another job's output group, at a version (-1 = latest)."""

    job_uid: str
    group_name: str
    result_name: str
    version: int = -1


class Connection(Record):
    """An output group of a parent job connected to one of this job's input groups."""

    job_uid: str
    group_name: str
    overrides: dict[str, SlotRef] = Field(
        default_factory=dict, description="slot name -> result of another job replacing it"
    )


class OutputResult(Record):
    """One result (slot) of an output group: a ``.cs`` file per version."""

    name: str
    type: str = Field(description="the result's prefix in the .cs file, e.g. blob, ctf")
    metafiles: list[str] = Field(default_factory=list, description="project-relative .cs path per version")
    num_items: int = 0
    passthrough: bool = False
    cleared_versions: list[int] = Field(default_factory=list, description="versions removed as intermediate "
                                                                          "results (their entries keep their index)")


class OutputGroup(Record):
    name: str
    type: str = Field(description="item type: particle, volume, micrograph...")
    title: str = ""
    results: list[OutputResult] = Field(default_factory=list)
    num_items: int = 0
    summary: dict[str, Any] = Field(default_factory=dict, description="figures of the latest run (resolution...)")

    def result(self, name: str) -> OutputResult | None:
        return next((r for r in self.results if r.name == name), None)


class RunError(Record):
    at: float
    message: str
    traceback: str = ""


class Run(Record):
    """Everything one run of a job sets, from launch to its end. ``clear`` replaces it in one
    assignment, so no field of an earlier run survives into the next."""

    lane: str | None = Field(default=None, description="the lane it was launched on")
    resources: Resources | None = Field(default=None, description="what it was given (target, GPU ids)")
    tag: str | None = Field(default=None, description="name it carries at the lane, to find it again")
    launch_uncertain: bool = Field(default=False, description="a launch began and its outcome is not known: "
                                                              "look for it by its tag before launching again")
    launched_at: float | None = None
    pid: int | None = Field(default=None, description="node lanes: worker process group id")
    pid_start: int | None = Field(default=None, description="start time of pid, against PID reuse")
    host: str | None = None
    cluster_job_id: str | None = None
    cluster_status: str | None = Field(default=None, description="what the lane last reported (state code)")
    verdict: str | None = Field(default=None, description="how the batch scheduler ended it (TIMEOUT...), if it did")
    nodes: str | None = Field(default=None, description="batch lanes: the nodes the scheduler gave it")
    cluster_final: bool = Field(default=False, description="cluster_status holds the scheduler's last word on "
                                                           "the ended job (COMPLETED, TIMEOUT...)")
    reason: str | None = Field(default=None, description="why it waits, was held, or what the lane said")
    submission_script: str | None = None
    cache_path_used: str | None = Field(default=None, description="SSD cache folder as resolved on the node")
    cache_use: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per node: cache path, bytes copied, hits, evictions (summed over ranks)")
    kill_pending: bool = Field(default=False, description="killed while its SSH worker was unreachable: "
                                                          "the master stops it when the worker answers")
    events_offset: int = Field(default=0, description="bytes of events.jsonl already applied")
    pending_outputs: list[OutputEvent] = Field(
        default_factory=list, description="outputs reported by a running worker, registered on completion")
    heartbeat_at: float | None = None
    progress: dict[str, Any] = Field(default_factory=dict, description="latest progress event")
    exit_code: int | None = None
    started_at: float | None = Field(default=None, description="when the worker reported it started")
    stop_reason: str | None = Field(default=None, description="the worker stopped on request (time-limit "
                                                              "warning), checkpoints saved: to be requeued")
    usage: list[dict[str, Any]] = Field(default_factory=list, description="per rank: what it used, by itself")
    signalled: str | None = Field(default=None, description="the worker's report of a signal that ended it, held "
                                                            "until the scheduler says why (preempted, node failure)")


class RunRecord(Record):
    """One run of a job, kept after it ends: what ``job show`` lists and ``usage`` sums."""

    number: int
    lane: str | None = None
    cluster_job_id: str | None = None
    nodes: str | None = None
    host: str | None = None
    resources: Resources | None = None
    launched_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    state: str = Field(description="how it ended: completed, failed, killed, requeued")
    verdict: str | None = Field(default=None, description="the scheduler's last word (NODE_FAIL, TIMEOUT...)")
    reason: str | None = None
    queued_by: str = ""
    usage: list[dict[str, Any]] = Field(default_factory=list, description="per rank, as the worker measured")
    scheduler: dict[str, Any] | None = Field(default=None, description="the scheduler's accounting after the end "
                                                                       "(elapsed_s, cpu_s, max_rss_bytes, tres, billing)")


def record_run(job: Job, state: str, reason: str | None = None) -> None:
    """Keep the run that just ended in the job's history (once per launch)."""
    run = job.run
    if run.launched_at is None or (job.runs and job.runs[-1].launched_at == run.launched_at):
        return
    job.runs = [*job.runs, RunRecord(
        number=len(job.runs) + 1, lane=run.lane, cluster_job_id=run.cluster_job_id, nodes=run.nodes, host=run.host,
        resources=run.resources, launched_at=run.launched_at, started_at=run.started_at, ended_at=now(),
        state=state, verdict=run.verdict, reason=reason, queued_by=job.queued_by, usage=list(run.usage))]


def update_last_run(job: Job, **fields: Any) -> None:
    """What arrives after a run ended (the scheduler's verdict, late usage reports)."""
    if job.runs and job.runs[-1].launched_at == job.run.launched_at:
        job.runs = [*job.runs[:-1], job.runs[-1].model_copy(update=fields)]


# where each run field lived before the run record (schema 2 documents)
LEGACY_RUN_FIELDS = {
    "resources_allocated": "resources", "run_pid": "pid", "run_pid_start": "pid_start", "run_host": "host",
    "kill_pending": "kill_pending", "events_offset": "events_offset", "pending_outputs": "pending_outputs",
    "exit_code": "exit_code", "cache_path_used": "cache_path_used", "cluster_job_id": "cluster_job_id",
    "cluster_job_status": "cluster_status", "cluster_job_status_reason": "reason",
    "cluster_job_submission_script": "submission_script", "heartbeat_at": "heartbeat_at", "progress": "progress",
}


class Job(Record):
    uid: str = Field(description="J1, J2... within the project; never reused")
    project_uid: str
    workspace_uids: list[str] = Field(default_factory=list)
    type: str
    title: str = ""
    description: str = ""
    created_by: str = ""
    params: dict[str, Any] = Field(default_factory=dict, description="values set by the user")
    inputs: dict[str, list[Connection]] = Field(default_factory=dict, description="input group -> connections")
    outputs: list[OutputGroup] = Field(default_factory=list)
    parents: list[str] = Field(default_factory=list)
    children: list[str] = Field(default_factory=list)
    status: JobStatus = JobStatus.BUILDING
    queue_status: QueueStatus | None = None
    queued_lane: str | None = None
    queued_gpu_ids: list[int] | None = Field(default=None, description="GPUs asked for at queue time")
    queued_target: str | None = Field(default=None, description="worker target asked for at queue time")
    priority: int = Field(default=0, description="higher launches first")
    status_times: dict[str, float] = Field(default_factory=dict, description="status -> last time entered")
    created_at: float = Field(default_factory=now)
    errors_run: list[RunError] = Field(default_factory=list, description=f"last {MAX_RUN_ERRORS} runtime errors")
    build_errors: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    cloned_from: str | None = Field(default=None, description="uid of the job this one was cloned from")
    imported_from: str | None = Field(default=None, description="'P1 J3 of instance ab12cd34' for imported jobs")
    is_final_result: bool = False
    is_ancestor_of_final_result: bool = False
    job_dir: str = Field(description="project-relative, e.g. J3")
    job_dir_size: int = Field(default=0, description="bytes of its files, when last measured")
    intermediate_size: int = Field(default=0, description="bytes of its intermediate results, when last measured")
    size_measured_at: float | None = Field(default=None, description="when the sizes were measured (None: never)")
    delete_intermediate_on_complete: bool | None = Field(
        default=None, description="clear intermediate results on completion (None: the project's setting)")
    resources_needed: Resources = Field(default_factory=Resources)
    run: Run = Field(default_factory=Run, description="what the latest run set; clear resets it whole")
    deleted: bool = False
    deleting: bool = Field(default=False, description="deleted, and its files are still being removed")
    deleted_at: float | None = None
    completed_count: int = Field(default=0, description="times it entered completed")
    updated_at: float = Field(default_factory=now, description="last time its record was written")
    queued_by: str = ""
    last_exported_at: float | None = None
    last_exported_location: str | None = None
    cluster_job_custom_vars: dict[str, Any] = Field(default_factory=dict)
    runs: list[RunRecord] = Field(default_factory=list, description="every run that ended, oldest first (kept "
                                                                    "through clears: usage accounting sums them)")
    runs_before_clear: int = Field(default=0, description="runs of the history that predate the last clear")
    auto_requeues: int = Field(default=0, description="times it was queued again by itself since a user queued it")

    @model_validator(mode="before")
    @classmethod
    def _legacy_run_fields(cls, data: Any) -> Any:
        """Documents written before the run record kept its fields at the top level."""
        if isinstance(data, dict) and any(k in data for k in LEGACY_RUN_FIELDS):
            data = dict(data)
            run = dict(data.get("run") or {})
            for old, new in LEGACY_RUN_FIELDS.items():
                if old in data:
                    run[new] = data.pop(old)
            data["run"] = run
        return data

    @property
    def ref(self) -> str:
        return f"{self.project_uid} {self.uid}"

    def output(self, name: str) -> OutputGroup | None:
        return next((g for g in self.outputs if g.name == name), None)

    def add_run_error(self, message: str, traceback: str = "") -> None:
        self.errors_run = [*self.errors_run, RunError(at=now(), message=message, traceback=traceback)][
            -MAX_RUN_ERRORS:
        ]


def set_status(job: Job, new: JobStatus) -> None:
    """The one door for status changes: checks the transition table, stamps the time."""
    from .status import check_transition

    check_transition(job.ref, job.status, new)
    if new.final and job.status.active:
        record_run(job, new.value, job.errors_run[-1].message if new == JobStatus.FAILED and job.errors_run else None)
    job.status = new
    if new == JobStatus.COMPLETED:
        job.completed_count += 1
    job.status_times = {**job.status_times, new.value: now()}
