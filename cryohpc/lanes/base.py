"""The protocol between the scheduler and the lanes, in two shapes.

A ``NodeLane`` (this machine, SSH worker targets) has capacity that cryohpc places jobs
on, target by target. A ``BatchLane`` (SLURM, PBS, SGE) hands jobs to a scheduler that
owns capacity and placement. Both take a ``LaunchRequest`` and give back a ``Launched``
handle; both answer ``poll`` with structured verdicts, and both raise only the errors of
``lanes.errors`` (plus ``CryohpcError`` for configuration faults).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..model import Job, Resources


def tag_prefix(instance_uid: str) -> str:
    return f"cryohpc_{instance_uid}_"


def job_tag(instance_uid: str, project_uid: str, job_uid: str) -> str:
    """The name a run carries at its lane (the scheduler's job name): finds it again when a
    launch's answer was lost or the master died mid-launch."""
    return f"{tag_prefix(instance_uid)}{project_uid}_{job_uid}"


def worker_env(gpu_ids: list[int] | None) -> dict[str, str]:
    """The environment a job's worker gets beyond the lane's (None: GPUs are the batch
    scheduler's to give)."""
    env = {"PYTHONUNBUFFERED": "1"}
    if gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
    return env


class RunState(StrEnum):
    """What a lane knows about a launched worker, independent of events."""

    PENDING = "pending"  # waiting in a batch scheduler's queue: no heartbeat expected
    ALIVE = "alive"
    EXITED = "exited"  # gone; exit_code may tell how
    UNKNOWN = "unknown"  # not listed and no exit code yet: the worker's events decide
    UNREACHABLE = "unreachable"  # the lane did not answer: conclude nothing, fail nothing


@dataclass(frozen=True)
class LaunchRequest:
    """Everything a lane needs to start one job's worker; nothing of the database."""

    project_uid: str
    job_uid: str
    job_type: str
    job_title: str
    job_creator: str
    job_dir: Path
    project_dir: Path
    command: list[str]
    env: dict[str, str]
    resources: Resources
    tag: str  # the name the run carries at the lane, to find it again
    custom: dict[str, Any] = field(default_factory=dict)  # batch lanes: resolved custom variables
    self_launched: bool = False  # the worker runs once and starts the program's MPI ranks itself

    @property
    def ref(self) -> str:
        return f"{self.project_uid} {self.job_uid}"


@dataclass
class Launched:
    """The handle a launch returns; the scheduler records it in the job's run record."""

    pid: int | None = None
    pid_start: int | None = None
    host: str | None = None
    cluster_job_id: str | None = None
    script: str | None = None
    adopted: bool = False  # an earlier launch was found running; nothing new was started


@dataclass(frozen=True)
class RunHandle:
    """What identifies a launched run, as the run record holds it."""

    ref: str
    job_dir: Path | None = None
    pid: int | None = None
    pid_start: int | None = None
    target: str = ""
    cluster_job_id: str | None = None
    tag: str | None = None

    @classmethod
    def of(cls, job: Job, job_dir: Path | None = None) -> RunHandle:
        run = job.run
        return cls(ref=job.ref, job_dir=job_dir, pid=run.pid, pid_start=run.pid_start,
                   target=run.resources.target if run.resources else "", cluster_job_id=run.cluster_job_id,
                   tag=run.tag)


@dataclass
class PollResult:
    state: RunState
    exit_code: int | None = None
    detail: str = ""
    scheduler_status: str | None = None
    ended_by_scheduler: bool = False  # a batch scheduler ended it (time limit, cancel, node failure)
    nodes: str = ""  # batch lanes: the node list the scheduler gave


class Lane(ABC):
    name: str
    poll_interval_s = 0.0  # least time between two status queries (0: every master pass)
    requeue_on: frozenset[str] = frozenset()  # run endings after which a job is queued again by itself
    max_requeues = 0

    def cache_settings(self, target: str = "") -> dict | None:
        """The SSD cache jobs on this lane (and target) use, or None."""
        return None

    @abstractmethod
    def worker_command(self, job_dir: Path, ranks: int, target: str = "") -> list[str]:
        """The command line that runs the job's worker (under MPI for ``ranks`` > 1)."""

    def program_launcher(self, target: str = "") -> list[str] | None:
        """The MPI launcher the site set for this lane (before ``-n N``), which declared
        programs run under too; None where the lane uses the default, and a program then
        gets the ``mpiexec`` of its own MPI (beside it, else on PATH)."""
        return None

    @abstractmethod
    def launch(self, request: LaunchRequest) -> Launched:
        """Start the job's worker.

        Raises:
            LaneUnreachable, LaunchUnconfirmed, LaunchRefused: see ``lanes.errors``.
        """

    @abstractmethod
    def find(self, request: LaunchRequest) -> Launched | None:
        """An earlier launch of this request that is still running (by its tag, or the pid
        file in its job directory), or None when the lane says there is none. Asked before
        launching again after a launch whose outcome is unknown.

        Raises:
            LaneUnreachable: the lane could not say; nothing may be launched yet.
        """

    @abstractmethod
    def poll(self, runs: list[RunHandle]) -> dict[str, PollResult]:
        """State of many runs in one go, keyed by ``RunHandle.ref``; never raises for an
        unanswered query (those runs are ``UNREACHABLE``)."""

    def tend(self) -> None:
        """Upkeep between the master's passes (the local lane starts its warm workers).

        Raises:
            CryohpcError, OSError: this lane's upkeep failed; the master goes on.
        """
        return None

    def close(self) -> None:
        """Stop what the lane runs for no job, as the master stops or drops the lane."""
        return None

    @abstractmethod
    def kill(self, run: RunHandle) -> None:
        """Stop the run and everything it started.

        Raises:
            TransientError: the lane did not answer; the run may still be going.
            CryohpcError: stopping it failed for good.
        """


class NodeLane(Lane):
    """Machines whose capacity cryohpc manages: jobs are placed per target."""

    kill_when_back = False  # True where a kill that found the target unreachable can wait for it
    oversubscribe = False  # True where MPI ranks may outnumber a machine's CPUs

    @abstractmethod
    def capacity(self) -> Resources:
        """Total resources jobs may use on this lane at once."""

    def targets(self) -> dict[str, Resources]:
        """Where cryohpc places jobs on this lane, each with its own capacity. A lane of
        one machine has a single unnamed target."""
        return {"": self.capacity()}

    def unavailable(self) -> dict[str, str]:
        """Targets that cannot take jobs now (unreachable), with the reason."""
        return {}

    def target_states(self) -> dict[str, tuple[str, float | None, str]]:
        """Named targets as last seen: target -> (state, since, detail)."""
        return {}


class BatchLane(Lane):
    """A batch scheduler that owns capacity and placement; cryohpc submits and follows."""

    def accounting(self, runs: list[RunHandle]) -> dict[str, dict]:
        """The scheduler's own figures for ended runs, by cluster job id.

        Raises:
            Exception: the scheduler keeps no accounting, or did not answer.
        """
        raise NotImplementedError(f"lane {self.name} keeps no scheduler accounting")

    @abstractmethod
    def custom_values(self, project_values: dict[str, Any], job_values: dict[str, Any]) -> dict[str, Any]:
        """Declared custom variables resolved for one job.

        Raises:
            BuildError: an undeclared variable, a wrong type, a required one unset.
        """
