"""Resources a job needs or was given: shared by the master's records, ``job.json`` (the
worker contract) and job type specs, so neither of the latter imports the master's model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Resources(BaseModel):
    """What a job needs (or was given) on a lane."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    cpus: int = 1
    gpus: int = 0
    ram_gb: float = 1.0
    mpi_ranks: int = 1
    nodes: int = Field(default=1, ge=1, description="machines the ranks spread over (cluster lanes)")
    gpu_ids: list[int] = Field(default_factory=list, description="set when allocated")
    target: str = Field(default="", description="set when allocated: the lane's worker target (node lanes)")
