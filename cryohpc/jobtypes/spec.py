"""What a job type declares: inputs, outputs, params, category, resources, run function.

Specs are data the master and the CLI read without importing any numerical code; the
worker imports the ``run`` function by its dotted path only when it runs the job.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import BuildError
from ..resources import Resources
from ..values import parse_scalar

CPUS_PER_RANK = "cpus_per_rank"
ParamType = Literal["int", "float", "str", "bool", "path", "enum"]
Category = Literal["import", "preprocessing", "reconstruction", "refinement", "validation", "utility"]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(Spec):
    name: str
    type: ParamType
    title: str = ""
    help: str = ""
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    pattern: str | None = Field(default=None, description="regular expression a str value must match")
    pattern_help: str = ""

    def coerce(self, value: Any, job_type: str) -> Any:
        """Turn a value (possibly a CLI string) into this param's type.

        Raises:
            BuildError: naming job type, param and value, and what would be accepted.
        """
        where = f"{job_type} param {self.name!r}"
        if value is None:
            if self.required:
                raise BuildError(f"{where} is required")
            return None
        try:
            if self.type == "path":
                # absolute now: the worker runs elsewhere (its job directory, another node)
                out: Any = os.path.abspath(os.path.expanduser(parse_scalar("str", value)))
            else:
                out = parse_scalar(self.type, value)
        except ValueError as err:
            raise BuildError(f"{where}: {err}") from None
        except TypeError:
            raise BuildError(f"{where}: {value!r} is not a valid {self.type}") from None
        if self.pattern and not re.fullmatch(self.pattern, out):
            raise BuildError(f"{where}: {out!r} is not valid" + (f" ({self.pattern_help})" if self.pattern_help else ""))
        if self.type == "enum" and out not in self.choices:
            raise BuildError(f"{where}: {out!r} is not one of {', '.join(self.choices)}")
        if self.min is not None and out < self.min:
            raise BuildError(f"{where}: {out} is below the minimum {self.min}")
        if self.max is not None and out > self.max:
            raise BuildError(f"{where}: {out} is above the maximum {self.max}")
        return out


class SlotSpec(Spec):
    name: str = Field(description="result name, also the field prefix in the .cs file")
    title: str = ""
    required: bool = True


class InputGroupSpec(Spec):
    name: str
    type: str = Field(description="item type accepted: particle, volume, micrograph...")
    title: str = ""
    slots: tuple[SlotSpec, ...] = ()
    count_min: int = 1
    count_max: int | None = Field(default=1, description="None = any number of connected groups")
    repeat_allowed: bool = Field(default=False, description="the same item may arrive twice")

    def slot(self, name: str) -> SlotSpec | None:
        return next((s for s in self.slots if s.name == name), None)


class OutputGroupSpec(Spec):
    name: str
    type: str
    title: str = ""
    results: tuple[str, ...] = Field(default=(), description="results the job may produce")
    passthrough_input: str | None = Field(
        default=None, description="input group whose unused results are passed through"
    )


class JobTypeSpec(Spec):
    name: str
    title: str
    category: Category
    description: str = ""
    inputs: tuple[InputGroupSpec, ...] = ()
    outputs: tuple[OutputGroupSpec, ...] = ()
    params: tuple[ParamSpec, ...] = ()
    resources: Resources = Field(default_factory=Resources)
    resource_params: dict[str, str] = Field(
        default_factory=dict, description="Resources field -> param that sets it (e.g. mpi_ranks -> compute_num_ranks); "
                                          "'cpus_per_rank' sets cpus to ranks times the param (threads per rank)"
    )
    run: str = Field(description="dotted path 'module:function' taking a RunContext")
    run_on_master: bool = Field(default=False, description="reads files only the master's machine sees (imports): "
                                                           "always queued to the default lane")
    preprocessing: Literal["deterministic", "extraction"] | None = Field(
        default=None, description="re-running it from its inputs gives the same results: 'clear preprocessing' "
                                  "may clear it ('extraction': writes particle stacks, cleared only when asked)")
    intermediate: tuple[str, ...] = Field(
        default=("checkpoints",), description="job-directory paths (globs) of partial results a completed job no "
                                              "longer needs: removed by 'clear intermediate results'")
    declared: dict[str, Any] | None = Field(
        default=None, description="an external program's declaration (jobtypes/declared.py), carried in job.json "
                                  "so the worker needs no declaration file where it runs")
    declared_in: str | None = Field(default=None, description="the declaration's file")

    @property
    def self_launched(self) -> bool:
        """The worker runs once and starts the program's MPI ranks itself (an external
        program's MPI build cannot share a communicator with cryohpc's worker)."""
        return self.declared is not None

    def input(self, name: str) -> InputGroupSpec | None:
        return next((g for g in self.inputs if g.name == name), None)

    def output(self, name: str) -> OutputGroupSpec | None:
        return next((g for g in self.outputs if g.name == name), None)

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    def resolve_params(self, *layers: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid by each layer (project defaults, then job values), coerced.

        Raises:
            BuildError: an unknown param, a value of the wrong type, a missing required one.
        """
        values = {p.name: p.default for p in self.params}
        for layer in layers:
            for k, v in layer.items():
                if k in values:
                    values[k] = v
        return {p.name: p.coerce(values[p.name], self.name) for p in self.params}

    def resources_for(self, params: dict[str, Any]) -> Resources:
        """What a job with these (resolved) params needs; CPUs never fewer than ranks."""
        values = self.resources.model_dump()
        per_rank = None
        for field, param in self.resource_params.items():
            if params.get(param) is not None:
                if field == CPUS_PER_RANK:
                    per_rank = params[param]
                else:
                    values[field] = params[param]
        if per_rank is not None:
            values["cpus"] = values["mpi_ranks"] * per_rank
        values["cpus"] = max(values["cpus"], values["mpi_ranks"])
        return Resources(**values)

    def load_run(self) -> Callable[[Any], None]:
        module, _, func = self.run.partition(":")
        return getattr(importlib.import_module(module), func)
