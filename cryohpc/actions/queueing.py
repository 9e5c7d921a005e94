"""Queue: a building job without build errors waits on a lane for the master to launch
it. The lane is checked now (GPUs, ranks, targets, custom variables), so what could never
launch is refused at once instead of waiting forever. Import jobs read files on the
master's machine, so they go to the default lane whatever lane was chosen, with a note."""

from __future__ import annotations

from ..builder import build_errors
from ..errors import BuildError
from ..instance import Instance
from ..jobtypes import get_jobtype
from ..lanes import BatchLane, Lane, NodeLane
from ..model import Job, Resources, set_status
from ..selections import topological
from ..status import JobStatus, QueueStatus
from ..store import Tx
from .common import Refused, owner
from .context import ActionContext, Journal, journal_in

PRIORITY_RANGE = (-1_000_000, 1_000_000)
DEFAULT_LANE = "local"


def fits_lane(job: Job, need: Resources, targets: dict[str, Resources], lane: str,
               target: str | None, gpu_ids: list[int] | None, oversubscribe: bool = False) -> None:
    """Refuse at queue time what could never launch, instead of queueing it forever: more
    GPUs than any machine has, GPU ids it lacks, and more MPI ranks than a machine has
    CPUs (unless the lane lets ranks share cores)."""
    named = len(targets) > 1 or "" not in targets  # a lane of worker targets, not one machine
    where = f"lane {lane!r}"
    if not targets:
        raise BuildError(f"{job.ref}: {where} has no workers yet; add one with 'cryohpc worker connect'")
    if target is not None:
        if not named:
            raise BuildError(f"{job.ref}: {where} is one machine; it has no targets to choose from")
        if target not in targets:
            raise BuildError(f"{job.ref}: {where} has no worker target {target!r} "
                             f"(targets: {', '.join(targets) or 'none'})")
        targets, where = {target: targets[target]}, f"worker {target} of lane {lane!r}"
    elif gpu_ids is not None and named:
        raise BuildError(f"{job.ref}: GPU ids name GPUs of one machine; give the worker target too "
                         f"(targets of lane {lane!r}: {', '.join(targets) or 'none'})")
    cores = max((c.cpus for c in targets.values()), default=0)
    if need.mpi_ranks > cores and not oversubscribe:
        raise BuildError(f"{job.ref} asks {need.mpi_ranks} MPI ranks; no machine of {where} has that many CPUs "
                         f"(most: {cores}); lower the ranks, or set 'oversubscribe: true' on the lane if ranks may "
                         "share cores")
    most = max((c.gpus for c in targets.values()), default=0)
    if need.gpus > most:
        per = ", ".join(f"{n or lane}: {c.gpus} {c.gpu_ids}" for n, c in targets.items()) or "no targets"
        raise BuildError(f"{job.ref} needs {need.gpus} GPU(s); no machine of {where} has that many ({per})")
    if gpu_ids is not None:
        cap = next(iter(targets.values()))
        unknown = [g for g in gpu_ids if g not in cap.gpu_ids]
        if unknown:
            raise BuildError(f"{job.ref}: GPU(s) {unknown} are not in {where} (GPUs: {cap.gpu_ids})")
        if len(gpu_ids) != need.gpus:
            raise BuildError(f"{job.ref} uses {need.gpus} GPU(s) but {len(gpu_ids)} were given: {gpu_ids}")


def assign_lane(inst: Instance, tx: Tx, job: Job, lanes: dict[str, Lane], lane: str, gpu_ids: list[int] | None,
                target: str | None, custom_vars: dict | None) -> None:
    """The checks a job must pass to wait on a lane, and the choices recorded on it; the
    same for ``queue``, ``restart`` and ``resume`` (to the same lane or another).

    Raises:
        NotFoundError: no such lane (with the site-config problems that may say why).
        BuildError: the job cannot fit the lane, or its custom variables are wrong.
    """
    if lane not in lanes:
        raise inst.no_lane(lane, lanes)
    spec = get_jobtype(job.type)
    project = tx.get_project(job.project_uid)
    need = spec.resources_for(spec.resolve_params(project.default_params, job.params))
    target_lane = lanes[lane]
    if need.nodes > 1 and (need.mpi_ranks % need.nodes or need.gpus % need.nodes):
        raise BuildError(f"{job.ref}: {need.mpi_ranks} MPI rank(s) and {need.gpus} GPU(s) do not divide evenly over "
                         f"{need.nodes} nodes; give ranks and GPUs that are multiples of the node count")
    if isinstance(target_lane, BatchLane):
        if gpu_ids is not None or target is not None:
            raise BuildError(f"{job.ref}: lane {lane!r} is a cluster lane; its scheduler picks nodes and GPUs")
        target_lane.custom_values(project.cluster_custom_vars, custom_vars or {})
    else:
        if custom_vars:
            raise BuildError(f"{job.ref}: lane {lane!r} takes no custom variables")
        assert isinstance(target_lane, NodeLane)
        if need.nodes > 1:
            raise BuildError(f"{job.ref} asks {need.nodes} nodes; lane {lane!r} runs a job on one machine "
                             "(queue it to a cluster lane, or set compute_num_nodes to 1)")
        fits_lane(job, need, target_lane.targets(), lane, target, gpu_ids, target_lane.oversubscribe)
    job.resources_needed = need
    job.queued_lane = lane
    job.queued_gpu_ids = gpu_ids
    job.queued_target = target
    job.cluster_job_custom_vars = dict(custom_vars or {})


def lane_for(job: Job, lane: str | None) -> tuple[str, str]:
    """The lane a job goes to, and a note when it is not the one asked for."""
    chosen = lane or DEFAULT_LANE
    if get_jobtype(job.type).run_on_master and chosen != DEFAULT_LANE:
        return DEFAULT_LANE, (f"{job.type} runs on the master's machine: queued to lane {DEFAULT_LANE!r} "
                              f"instead of {chosen!r}")
    return chosen, ""


def check_queue(ctx: ActionContext, tx: Tx, job: Job, lane: str | None = None, priority: int | None = None,
                gpu_ids: list[int] | None = None, custom_vars: dict | None = None,
                target: str | None = None) -> str:
    """What queueing ``job`` would do; the lane choices are recorded on ``job``.

    Raises:
        BuildError: the job has build errors or cannot fit the lane. Refused: not building.
        NotFoundError: no such lane.
    """
    if job.status != JobStatus.BUILDING:
        raise Refused(f"{job.ref} is {job.status.value}; only building jobs can be queued")
    errors = build_errors(tx, job)
    if errors:
        job.build_errors = errors
        raise BuildError(f"{job.ref} cannot be queued:\n  " + "\n  ".join(errors))
    chosen, note = lane_for(job, lane)
    if note:
        gpu_ids = target = None  # they named machines of the lane asked for
    assign_lane(ctx.inst, tx, job, ctx.lanes, chosen, gpu_ids, target, custom_vars)
    if priority is not None and not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        raise BuildError(f"{job.ref}: priority {priority} is outside {PRIORITY_RANGE[0]}..{PRIORITY_RANGE[1]}")
    job.run.reason = note or None
    return f"queue to lane {chosen}" + (f" ({note})" if note else "")


def queue_job(inst: Instance, project_uid: str, job_uid: str, lane: str | None = None, priority: int | None = None,
              gpu_ids: list[int] | None = None, custom_vars: dict | None = None, target: str | None = None,
              *, ctx: ActionContext | None = None, journal: Journal | None = None) -> Job:
    """Queue a building job to a lane, optionally to one worker ``target`` of a node lane
    and given GPU ids there; ``custom_vars`` are job-level values for a cluster lane's
    custom variables (checked against their declared types now). A job that must run on
    the master goes to the default lane; ``job.run.reason`` says so.

    Raises:
        BuildError: the job has build errors or cannot fit the lane. Refused: not building.
        NotFoundError: unknown project, job or lane.
    """
    ctx = ctx or ActionContext(inst)
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        check_queue(ctx, tx, job, lane, priority, gpu_ids, custom_vars, target)
        if priority is not None:
            job.priority = priority
        put_on_queue(job)
        journal_in(tx, journal)
        tx.put_job(job)
    return job


def put_on_queue(job: Job) -> None:
    """A user queues it (queue, resume, restart): the automatic requeues count anew."""
    job.build_errors = []
    job.auto_requeues = 0
    job.queued_by = owner()
    set_status(job, JobStatus.QUEUED)
    job.queue_status = QueueStatus.ACTIVELY_QUEUED


def ancestors_to_rerun(tx: Tx, job: Job) -> list[Job]:
    """Ancestors that must run again before ``job`` can: building ones (cleared, or never
    run), parents first.

    Raises:
        Refused: an ancestor is killed or failed (it must be cleared or restarted first).
    """
    seen: dict[str, Job] = {}
    todo = list(job.parents)
    while todo:
        uid = todo.pop()
        if uid in seen:
            continue
        parent = tx.get_job(job.project_uid, uid)
        seen[uid] = parent
        if parent.status in (JobStatus.KILLED, JobStatus.FAILED):
            raise Refused(f"{job.ref}: ancestor {uid} is {parent.status.value}; clear or restart it first")
        if parent.status == JobStatus.BUILDING:
            todo.extend(parent.parents)
    building = [j for j in seen.values() if j.status == JobStatus.BUILDING]
    order = topological(building)
    return [seen[uid] for uid in order]


def queue_with_ancestors(inst: Instance, project_uid: str, job_uid: str, lane: str | None = None,
                         priority: int | None = None, gpu_ids: list[int] | None = None,
                         custom_vars: dict | None = None, target: str | None = None) -> list[Job]:
    """Queue a job's building ancestors (cleared ones, typically: a cleaned-up
    preprocessing chain) in order, then the job, in one transaction: all or none. The
    ancestors go to the same lane and priority; GPUs and target are the job's own.

    Raises:
        Refused, BuildError, NotFoundError: as ``queue_job``, for any of them (named).
    """
    ctx = ActionContext(inst)
    queued = []
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        if job.status != JobStatus.BUILDING:
            raise Refused(f"{job.ref} is {job.status.value}; only building jobs can be queued")
        for ancestor in ancestors_to_rerun(tx, job):
            check_queue(ctx, tx, ancestor, lane, priority, None, custom_vars, None)
            queued.append(ancestor)
        check_queue(ctx, tx, job, lane, priority, gpu_ids, custom_vars, target)
        queued.append(job)
        for j in queued:
            if priority is not None:
                j.priority = priority
            put_on_queue(j)
            tx.put_job(j)
    return queued
