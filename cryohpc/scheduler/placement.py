"""Which queued jobs launch now, and where: a pure function of the queue, the parents'
states, what running jobs hold and what each lane offers. No database, no lane calls:
the scheduler gathers the inputs, this decides, the launcher acts.

Order is priority (higher first), then queue time. A job waiting for resources holds up
lower-priority jobs of its lane, so large jobs are not starved by a stream of small ones.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum

from ..model import Job, Resources
from ..status import JobStatus, QueueStatus


@dataclass(frozen=True)
class LaneView:
    """What placement needs of a lane: batch lanes place their own jobs; node lanes offer
    targets, each with its capacity, some of them unreachable now."""

    batch: bool = False
    targets: dict[str, Resources] = field(default_factory=dict)
    down: frozenset[str] = frozenset()
    oversubscribe: bool = False  # MPI ranks may share cores


class Action(StrEnum):
    LAUNCH = "launch"
    WAIT = "wait"
    FAIL = "fail"


@dataclass(frozen=True)
class Decision:
    job: Job
    action: Action
    lane: str = ""
    alloc: Resources | None = None  # LAUNCH
    queue_status: QueueStatus | None = None  # WAIT
    message: str = ""  # FAIL


def launch_order(job: Job) -> tuple:
    return (-job.priority, job.status_times.get("queued", 0.0), job.created_at)


def used_by(active: list[Job]) -> dict[tuple[str, str], Resources]:
    """(lane, target) -> what launched jobs hold there."""
    used: dict[tuple[str, str], Resources] = defaultdict(lambda: Resources(cpus=0, gpus=0, ram_gb=0))
    for job in active:
        take(used, job.run.lane or job.queued_lane or "local", job.run.resources or job.resources_needed)
    return used


def take(used: dict[tuple[str, str], Resources], lane: str, alloc: Resources) -> None:
    u = used[(lane, alloc.target)]
    u.cpus += alloc.cpus
    u.ram_gb += alloc.ram_gb
    u.gpu_ids = [*u.gpu_ids, *alloc.gpu_ids]


def fit(need: Resources, cap: Resources, used: Resources, gpu_ids: list[int] | None = None,
        oversubscribe: bool = False) -> Resources | None:
    """What the job gets on one target, or None when it does not fit now. Each MPI rank
    takes a core unless the lane lets ranks share them."""
    wanted = need.cpus if oversubscribe else max(need.cpus, need.mpi_ranks)
    cpus = min(wanted, cap.cpus)  # a lane smaller than the job's wish runs it on all it has
    ram = min(need.ram_gb, cap.ram_gb)
    if used.cpus + cpus > cap.cpus or used.ram_gb + ram > cap.ram_gb + 1e-9:
        return None
    free = [g for g in cap.gpu_ids if g not in used.gpu_ids]
    if gpu_ids:
        if any(g not in free for g in gpu_ids):
            return None
        gpus = list(gpu_ids)
    else:
        if len(free) < need.gpus:
            return None
        gpus = free[: need.gpus]
    return Resources(cpus=cpus, ram_gb=ram, gpus=len(gpus), mpi_ranks=need.mpi_ranks, gpu_ids=gpus)


def place(queued: list[Job], parent_status: dict[tuple[str, str], JobStatus], active: list[Job],
          lanes: dict[str, LaneView]) -> list[Decision]:
    """One decision per queued job, in launch order."""
    used = used_by(active)
    blocked: set[str] = set()  # lanes where a higher-priority job waits for resources
    decisions = []
    for job in sorted(queued, key=launch_order):
        decision = _place_one(job, parent_status, lanes, used, blocked)
        if decision.action == Action.LAUNCH and not lanes[decision.lane].batch and decision.alloc:
            take(used, decision.lane, decision.alloc)
        decisions.append(decision)
    return decisions


def _place_one(job: Job, parent_status: dict[tuple[str, str], JobStatus], lanes: dict[str, LaneView],
               used: dict[tuple[str, str], Resources], blocked: set[str]) -> Decision:
    lane_name = job.queued_lane or "local"
    states = [parent_status.get((job.project_uid, p)) for p in job.parents]
    if any(s in (JobStatus.FAILED, JobStatus.KILLED) for s in states):
        return Decision(job, Action.WAIT, lane_name, queue_status=QueueStatus.WAITING_PARENT_FAILED)
    if any(s != JobStatus.COMPLETED for s in states):
        return Decision(job, Action.WAIT, lane_name, queue_status=QueueStatus.WAITING_INPUTS)
    lane = lanes.get(lane_name)
    if lane is None:
        return Decision(job, Action.FAIL, lane_name, message=f"lane {lane_name!r} is not configured "
                                                             "(see 'cryohpc lane list')")
    if lane.batch:  # the batch scheduler queues and places it
        return Decision(job, Action.LAUNCH, lane_name, alloc=job.resources_needed.model_copy(update={"gpu_ids": []}))
    if lane_name in blocked:
        return Decision(job, Action.WAIT, lane_name, queue_status=QueueStatus.WAITING_RESOURCES)
    targets = lane.targets
    if job.queued_target:
        if job.queued_target not in targets:
            return Decision(job, Action.FAIL, lane_name, message=f"worker target {job.queued_target!r} is no "
                                                                 f"longer in lane {lane_name!r}")
        targets = {job.queued_target: targets[job.queued_target]}
    if targets and all(t in lane.down for t in targets):
        return Decision(job, Action.WAIT, lane_name, queue_status=QueueStatus.WAITING_UNREACHABLE)
    for name, cap in targets.items():
        if name in lane.down:
            continue
        alloc = fit(job.resources_needed, cap, used[(lane_name, name)], job.queued_gpu_ids, lane.oversubscribe)
        if alloc is not None:
            alloc.target = name
            return Decision(job, Action.LAUNCH, lane_name, alloc=alloc)
    blocked.add(lane_name)
    return Decision(job, Action.WAIT, lane_name, queue_status=QueueStatus.WAITING_RESOURCES)
