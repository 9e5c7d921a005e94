"""``job.json``: the frozen spec the master hands a worker, the worker's only input.

It holds absolute paths so the worker needs neither the database nor the master.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InputFileError
from .resources import Resources

JOB_FILE = "job.json"


class ConnectionFiles(BaseModel):
    """One connected output group, resolved to files."""

    model_config = ConfigDict(extra="forbid")

    job_uid: str
    group_name: str
    slots: dict[str, str] = Field(description="slot the job uses -> absolute .cs path")
    passthrough: dict[str, str] = Field(default_factory=dict, description="result to pass on -> absolute .cs path")


class OutputSpecFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    type: str
    passthrough_input: str | None = None


class CacheSettings(BaseModel):
    """The lane's SSD cache, as the worker needs it; ``path`` is expanded on the node."""

    model_config = ConfigDict(extra="forbid")

    path: str
    quota_mb: float | None = None
    reserve_mb: float = 10_000
    lifetime_days: float = 30
    threads: int = 2


class JobFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance_uid: str
    project_uid: str
    job_uid: str
    type: str
    title: str = ""
    params: dict[str, Any]
    project_dir: str
    job_dir: str
    inputs: dict[str, list[ConnectionFiles]] = Field(default_factory=dict)
    outputs: list[OutputSpecFile] = Field(default_factory=list)
    resources: Resources
    heartbeat_interval_s: float = 10.0
    cache: CacheSettings | None = None
    created_at: float
    wake_path: str | None = None  # the master's FIFO: rank 0 pokes it when the job ends (wakeup.py)
    jobtype: dict[str, Any] | None = None  # a declared job type's declaration (jobtypes/declared.py)
    program_launcher: list[str] | None = None  # the lane's own MPI launcher for a declared program (None: default)
    oversubscribe: bool = False  # the lane lets MPI ranks outnumber CPUs

    def write(self, job_dir: Path) -> Path:
        path = job_dir / JOB_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, job_dir: Path) -> JobFile:
        path = job_dir / JOB_FILE
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except FileNotFoundError as err:
            raise InputFileError(f"{path}: no job.json; was this job launched by a cryohpc master?") from err
        except (ValueError, ValidationError) as err:
            raise InputFileError(f"{path}: malformed job.json: {err}") from err
