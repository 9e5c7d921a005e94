"""What the scheduler needs from any lane: capacity, launch, batched poll, kill."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..model import Job, Resources


class RunState(StrEnum):
    """What a lane knows about a launched worker, independent of events."""

    PENDING = "pending"  # waiting in a batch scheduler's queue: no heartbeat expected
    ALIVE = "alive"
    EXITED = "exited"  # gone; exit_code may tell how
    UNKNOWN = "unknown"  # not listed and no exit code yet: the worker's events decide
    UNREACHABLE = "unreachable"  # the lane did not answer: conclude nothing, fail nothing


@dataclass
class Launched:
    pid: int | None = None
    pid_start: int | None = None
    host: str | None = None
    cluster_job_id: str | None = None
    script: str | None = None


@dataclass
class PollResult:
    state: RunState
    exit_code: int | None = None
    detail: str = ""
    scheduler_status: str | None = None


class Lane(ABC):
    name: str
    self_scheduling = False  # True where a batch scheduler, not cryohpc, places jobs
    poll_interval_s = 0.0  # least time between two status queries (0: every master pass)
    kill_when_back = False  # True where a kill that found the target unreachable can wait for it

    def cache_settings(self, target: str = "") -> dict | None:
        """The SSD cache jobs on this lane (and target) use, or None."""
        return None

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

    @abstractmethod
    def worker_command(self, job_dir: Path, ranks: int, target: str = "") -> list[str]:
        """The command line that runs the job's worker (under MPI for ``ranks`` > 1)."""

    @abstractmethod
    def launch(self, job: Job, job_dir: Path, command: list[str], env: dict[str, str], *, target: str = "",
               project_dir: Path | None = None, custom: dict | None = None) -> Launched:
        """Start ``command`` for the job (on ``target``, for lanes that have several);
        return what identifies the run. Cluster lanes render ``custom`` variables."""

    @abstractmethod
    def poll(self, jobs: list[Job], job_dirs: dict[str, Path] | None = None) -> dict[str, PollResult]:
        """State of many jobs' runs in one go, keyed by ``job.ref``."""

    @abstractmethod
    def kill(self, job: Job) -> None:
        """Stop the job's run and everything it started."""
