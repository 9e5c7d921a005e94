"""What users do to jobs once built: queue, kill, clear. CryoSPARC's rules apply: only a
building job without build errors can be queued, only a final job can be cleared."""

from __future__ import annotations

import shutil

from .builder import build_errors, declared_outputs, job_dir_abs
from .errors import BuildError, CryohpcError, TransientError, UserError
from .instance import Instance
from .jobtypes import get_jobtype
from .lanes import BatchLane, Lane, NodeLane, RunHandle
from .model import Job, Resources, Run, set_status
from .status import JobStatus, QueueStatus
from .store import Tx

PRIORITY_RANGE = (-1_000_000, 1_000_000)


def _fits_lane(job: Job, need: Resources, targets: dict[str, Resources], lane: str,
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


def _assign_lane(inst: Instance, tx: Tx, job: Job, lanes: dict[str, Lane], lane: str, gpu_ids: list[int] | None,
                 target: str | None, custom_vars: dict | None) -> None:
    """The checks a job must pass to wait on a lane, and the choices recorded on it; the
    same for ``queue`` and for ``restart`` (to the same lane or another).

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
    if isinstance(target_lane, BatchLane):
        if gpu_ids is not None or target is not None:
            raise BuildError(f"{job.ref}: lane {lane!r} is a cluster lane; its scheduler picks nodes and GPUs")
        target_lane.custom_values(project.cluster_custom_vars, custom_vars or {})
    else:
        if custom_vars:
            raise BuildError(f"{job.ref}: lane {lane!r} takes no custom variables")
        assert isinstance(target_lane, NodeLane)
        _fits_lane(job, need, target_lane.targets(), lane, target, gpu_ids, target_lane.oversubscribe)
    job.resources_needed = need
    job.queued_lane = lane
    job.queued_gpu_ids = gpu_ids
    job.queued_target = target
    job.cluster_job_custom_vars = dict(custom_vars or {})


def queue_job(
    inst: Instance,
    project_uid: str,
    job_uid: str,
    lane: str | None = None,
    priority: int | None = None,
    gpu_ids: list[int] | None = None,
    custom_vars: dict | None = None,
    target: str | None = None,
) -> Job:
    """Queue a building job to a lane, optionally to one worker ``target`` of a node lane
    and given GPU ids there; ``custom_vars`` are job-level values for a cluster lane's
    custom variables (checked against their declared types now).

    Raises:
        BuildError: the job has build errors, is not building, or cannot fit the lane.
        NotFoundError: unknown project, job or lane.
    """
    lanes = inst.build_lanes()
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        if job.status != JobStatus.BUILDING:
            raise BuildError(f"{job.ref} is {job.status.value}; only building jobs can be queued")
        errors = build_errors(tx, job)
        if errors:
            job.build_errors = errors
            raise BuildError(f"{job.ref} cannot be queued:\n  " + "\n  ".join(errors))
        _assign_lane(inst, tx, job, lanes, lane or "local", gpu_ids, target, custom_vars)
        if priority is not None and not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
            raise BuildError(f"{job.ref}: priority {priority} is outside {PRIORITY_RANGE[0]}..{PRIORITY_RANGE[1]}")
        if priority is not None:
            job.priority = priority
        job.build_errors = []
        set_status(job, JobStatus.QUEUED)
        job.queue_status = QueueStatus.ACTIVELY_QUEUED
        tx.put_job(job)
    return job


def _by_hand(job: Job) -> str:
    if job.run.cluster_job_id:
        return f"cancel cluster job {job.run.cluster_job_id}"
    return f"stop process group {job.run.pid} on {job.run.host}"


def kill_job(inst: Instance, project_uid: str, job_uid: str) -> Job:
    """Kill a queued or running job; its worker and every process it started are stopped.

    The job is marked killed first, so the master, seeing the worker vanish, does not
    record it as failed meanwhile. A job on an SSH worker that does not answer stays
    marked for killing (``kill_pending``); the master stops it once the worker is back.

    Raises:
        UserError: the job is not queued or running, or stopping it failed for good.
    """
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        if job.status != JobStatus.QUEUED and not job.status.active:
            raise UserError(f"{job.ref} is {job.status.value}; only queued or running jobs can be killed")
        was_running = job.status.active
        if job.status == JobStatus.QUEUED and job.run.launch_uncertain:
            job.run.kill_pending = True  # a launch is (or was, by a master that died) under way
            job.run.reason = "killed while a launch was under way; what it started is stopped once found"
        job.run.pending_outputs = []
        set_status(job, JobStatus.KILLED)
        tx.put_job(job)
    if was_running:
        lane = inst.build_lanes().get(job.run.lane or job.queued_lane or "local")
        if lane is not None:
            try:
                lane.kill(RunHandle.of(job))
            except TransientError as err:
                if not (isinstance(lane, NodeLane) and lane.kill_when_back):
                    raise UserError(f"{job.ref} is marked killed, but stopping it failed: {err}; "
                                    f"{_by_hand(job)} by hand") from err
                with inst.store.write() as tx:
                    job = tx.get_job(project_uid, job_uid)
                    job.run.kill_pending = True
                    job.run.reason = f"will be stopped when its worker answers again ({err})"
                    tx.put_job(job)
            except CryohpcError as err:
                raise UserError(f"{job.ref} is marked killed, but stopping it failed: {err}; "
                                f"{_by_hand(job)} by hand") from err
    return job


def restart_job(inst: Instance, project_uid: str, job_uid: str, lane: str | None = None) -> Job:
    """Queue a killed or failed job again without clearing its directory: partial results
    (checkpoints) it saved are reused, and its earlier event logs are kept. The lane (its
    own, or ``lane``) is checked as ``queue`` checks it: it may have changed since.

    Raises:
        UserError: the job is not killed or failed, or the lane cannot take it.
    """
    lanes = inst.build_lanes()
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        if job.status not in (JobStatus.KILLED, JobStatus.FAILED):
            raise UserError(f"{job.ref} is {job.status.value}; only killed or failed jobs can be restarted")
        if job.run.kill_pending:
            raise UserError(f"{job.ref}: its earlier run has not been stopped yet ({job.run.reason}); "
                            "restart it once the kill is done")
        same = lane is None or lane == job.queued_lane
        if same:
            _assign_lane(inst, tx, job, lanes, job.queued_lane or "local", job.queued_gpu_ids, job.queued_target,
                         job.cluster_job_custom_vars)
        else:
            _assign_lane(inst, tx, job, lanes, lane, None, None, None)
        job.run.pending_outputs = []
        set_status(job, JobStatus.QUEUED)
        job.queue_status = QueueStatus.ACTIVELY_QUEUED
        tx.put_job(job)
    return job


def clear_job(inst: Instance, project_uid: str, job_uid: str) -> Job:
    """Return a final job to building: its run record, errors, outputs and queue choices
    are reset in one step, then its directory's contents are removed (outside the
    transaction: deleting a large directory must not hold every other writer).

    Raises:
        UserError: the job is not final, a child of it is queued or running, or its last
            run is still to be stopped.
    """
    with inst.store.write() as tx:
        job = tx.get_job(project_uid, job_uid)
        if not job.status.final:
            raise UserError(f"{job.ref} is {job.status.value}; only completed, killed or failed jobs can be cleared")
        if job.run.kill_pending:
            raise UserError(f"{job.ref}: its last run has not been stopped yet ({job.run.reason}); "
                            "clear it once the kill is done")
        for child_uid in job.children:
            child = tx.get_job(project_uid, child_uid, include_deleted=True)
            if child.status == JobStatus.QUEUED or child.status.active:
                raise UserError(f"{job.ref}: child {child_uid} is {child.status.value}; kill it first")
        path = job_dir_abs(tx.get_project(project_uid), job)
        set_status(job, JobStatus.BUILDING)
        job.outputs = declared_outputs(get_jobtype(job.type))
        job.run = Run()
        job.errors_run = []
        job.queue_status = None
        job.queued_lane = job.queued_target = job.queued_gpu_ids = None
        job.cluster_job_custom_vars = {}
        job.job_dir_size = 0
        job.build_errors = build_errors(tx, job)
        tx.put_job(job)
    if path.is_dir():
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    return job
