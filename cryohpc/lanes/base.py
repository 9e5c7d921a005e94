"""What the scheduler needs from any lane: capacity, launch, batched poll, kill."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..model import Job, Resources


class RunState(StrEnum):
    """What a lane knows about a launched worker, independent of events."""

    ALIVE = "alive"
    EXITED = "exited"  # gone; exit_code may tell how
    UNKNOWN = "unknown"  # the lane could not tell (unreachable): do not conclude anything


@dataclass
class Launched:
    pid: int | None = None
    pid_start: int | None = None
    host: str | None = None
    cluster_job_id: str | None = None


@dataclass
class PollResult:
    state: RunState
    exit_code: int | None = None
    detail: str = ""


class Lane(ABC):
    name: str

    @abstractmethod
    def capacity(self) -> Resources:
        """Total resources jobs may use on this lane at once."""

    @abstractmethod
    def launch(self, job: Job, job_dir: Path, command: list[str], env: dict[str, str]) -> Launched:
        """Start ``command`` for the job; return what identifies the run."""

    @abstractmethod
    def poll(self, jobs: list[Job]) -> dict[str, PollResult]:
        """State of many jobs' runs in one go, keyed by ``job.ref``."""

    @abstractmethod
    def kill(self, job: Job) -> None:
        """Stop the job's run and everything it started."""
