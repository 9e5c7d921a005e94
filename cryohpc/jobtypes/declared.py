"""Job types declared in YAML, not coded: an external program, its inputs exported as
STAR or MRC, its command line a Jinja2 template, its outputs imported back as ``.cs``.

Shipped declarations live in ``cryohpc/jobtypes/programs/``; a site adds its own under
``<home>/jobtypes/``. Each file is checked when it is loaded: a broken one is refused
with its file and line named, and the other job types stay usable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from ..named_files import read_named_file
from ..resources import Resources
from .spec import (
    CPUS_PER_RANK,
    Category,
    InputGroupSpec,
    JobTypeSpec,
    OutputGroupSpec,
    ParamSpec,
    SlotSpec,
)

SHIPPED_DIR = Path(__file__).parent / "programs"
RUN = "cryohpc.jobtypes.external:run_external"
_NAME = r"[a-z][a-z0-9_]*"


class Decl(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VersionCheck(Decl):
    """How to ask the program its version, and which versions its flags fit."""

    command: tuple[str, ...] = Field(description="argv printing the version, e.g. [relion_refine, --version]")
    pattern: str = Field(description="regular expression whose first group is the version (digits and dots)")
    min: str | None = Field(default=None, description="oldest version that works (inclusive)")
    below: str | None = Field(default=None, description="first version that does not (exclusive)")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            if re.compile(v).groups < 1:
                raise ValueError("needs one (group) around the version")
        except re.error as err:
            raise ValueError(f"not a regular expression: {err}") from None
        return v


class ProgramDecl(Decl):
    executable: str = Field(description="the program run with one rank (found on PATH or absolute)")
    mpi_executable: str | None = Field(default=None, description="its MPI build, run under the MPI launcher with "
                                                                 "more than one rank (none: the program is not MPI)")
    min_mpi_ranks: int = Field(default=1, ge=1, description="fewest ranks the MPI build accepts")
    version: VersionCheck | None = None
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for the program")


class SlotDecl(Decl):
    name: str
    title: str = ""
    required: bool = True


class InputDecl(Decl):
    name: str = Field(pattern=_NAME)
    type: str
    title: str = ""
    slots: tuple[SlotDecl, ...] = ()
    count_min: int = 1
    count_max: int | None = 1
    export: Literal["star", "mrc", "cs"] = Field(description="star: particles as a RELION 3.1 STAR file; mrc: the "
                                                             "map files' paths; cs: the joined .cs file as it is")


class ImportDecl(Decl):
    """One result of an output group and where it comes from (paths are globs relative to
    the job's output folder; several matches: the last in natural order, i.e. the latest
    iteration; with ``each``, every match whose first number is the last one's, i.e. each
    class of the latest iteration)."""

    result: str = Field(description="result name: map, map_half_A, mask, blob, alignments3D, alignments2D...")
    mrc: str | None = Field(default=None, description="a volume (or a stack, for blob) written by the program")
    star: str | None = Field(default=None, description="a particle STAR file; rows matched to the input's by "
                                                       "rlnImageName")
    input: str | None = Field(default=None, description="the exported input a STAR file's rows come from")
    each: bool = Field(default=False, description="every match is one item (class volumes, class averages)")

    @model_validator(mode="after")
    def _one_source(self) -> ImportDecl:
        if (self.mrc is None) == (self.star is None):
            raise ValueError("give exactly one of mrc or star")
        if self.star is not None and self.input is None:
            raise ValueError("a star import names the exported input its rows come from (input: ...)")
        return self


class SummaryDecl(Decl):
    star: str = Field(description="a STAR file (glob, as imports) holding the value")
    block: str = Field(description="its data block, e.g. model_general")
    column: str


class OutputDecl(Decl):
    name: str = Field(pattern=_NAME)
    type: str
    title: str = ""
    imports: tuple[ImportDecl, ...] = Field(default=(), alias="import")
    passthrough_input: str | None = None
    summary: dict[str, SummaryDecl] = Field(default_factory=dict)
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ProgressDecl(Decl):
    pattern: str = Field(description="regular expression over one line of the program's output; its first group "
                                     "is the value")
    what: str = Field(description="what the value is: iteration, resolution_A, ...")
    total_param: str | None = Field(default=None, description="param holding the expected number (for a progress bar)")


class ContinueDecl(Decl):
    """How a killed or requeued run continues where the program stopped."""

    checkpoint: str = Field(description="glob (in the output folder) of the program's restart files; the latest in "
                                        "natural order is used")
    args: str = Field(description="Jinja2 command-line arguments for continuing; {{ checkpoint }} is that file")


class StepDecl(Decl):
    """A program run once before the main one (a mask to make, a file to convert)."""

    executable: str
    args: str = Field(description="Jinja2 arguments, as the main program's")
    when: str | None = Field(default=None, description="Jinja2 expression: run the step only where it is true")


class JobTypeDecl(Decl):
    name: str = Field(pattern=_NAME)
    title: str
    category: Category
    description: str = ""
    program: ProgramDecl
    inputs: tuple[InputDecl, ...] = ()
    outputs: tuple[OutputDecl, ...] = ()
    params: tuple[ParamSpec, ...] = ()
    resources: Resources = Field(default_factory=Resources)
    resource_params: dict[str, str] = Field(default_factory=dict)
    args: str = Field(description="Jinja2 template of the program's arguments; every value printed is quoted")
    before: tuple[StepDecl, ...] = ()
    continue_: ContinueDecl | None = Field(default=None, alias="continue")
    progress: tuple[ProgressDecl, ...] = ()
    log_skip: tuple[str, ...] = Field(default=(), description="regular expressions of output lines kept out of the "
                                                              "job log (progress bars)")
    output_dir: str = Field(default="out", description="folder of the job directory the program writes into")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> JobTypeDecl:
        inputs = {i.name: i for i in self.inputs}
        params = {p.name for p in self.params}
        for out in self.outputs:
            for imp in out.imports:
                if imp.input is not None and imp.input not in inputs:
                    raise ValueError(f"output {out.name!r} imports from input {imp.input!r}, which is not declared")
                if imp.input is not None and inputs[imp.input].export != "star":
                    raise ValueError(f"output {out.name!r} matches rows of input {imp.input!r}, which is not "
                                     "exported as star")
            if out.passthrough_input and out.passthrough_input not in inputs:
                raise ValueError(f"output {out.name!r} passes through {out.passthrough_input!r}, not an input")
        for field, param in self.resource_params.items():
            if field not in Resources.model_fields and field != CPUS_PER_RANK:
                raise ValueError(f"resource_params: {field!r} is not a resource ({', '.join(Resources.model_fields)})")
            if param not in params:
                raise ValueError(f"resource_params: {field} is set by param {param!r}, which is not declared")
        for pattern in [p.pattern for p in self.progress] + list(self.log_skip):
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"pattern {pattern!r}: {err}") from None
        env = jinja2.Environment()
        sources = [("args", self.args), ("continue.args", self.continue_.args if self.continue_ else "")]
        sources += [(f"before[{i}].args", s.args) for i, s in enumerate(self.before)]
        sources += [(f"before[{i}].when", f"{{{{ {s.when} }}}}") for i, s in enumerate(self.before) if s.when]
        for where, source in sources:
            try:
                env.parse(source)
            except Exception as err:  # jinja2.TemplateSyntaxError
                raise ValueError(f"{where}: template syntax error: {err}") from None
        return self

    def spec(self, source: str) -> JobTypeSpec:
        """The job type as the builder, the master and the worker know it."""
        return JobTypeSpec(
            name=self.name, title=self.title, category=self.category, description=self.description,
            inputs=tuple(InputGroupSpec(name=i.name, type=i.type, title=i.title, count_min=i.count_min,
                                        count_max=i.count_max,
                                        slots=tuple(SlotSpec(name=s.name, title=s.title, required=s.required)
                                                    for s in i.slots)) for i in self.inputs),
            outputs=tuple(OutputGroupSpec(name=o.name, type=o.type, title=o.title,
                                          results=tuple(dict.fromkeys(i.result for i in o.imports)),
                                          passthrough_input=o.passthrough_input) for o in self.outputs),
            params=self.params, resources=self.resources, resource_params=self.resource_params, run=RUN,
            declared=self.model_dump(mode="json", by_alias=True), declared_in=source,
        )


def _line_of(text: str, loc: tuple) -> int | None:
    """The line of the YAML node at a pydantic error location (keys and list indexes)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
            if match is None:
                break
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def load_declaration(path: Path) -> JobTypeSpec:
    """One declaration file as a job type.

    Raises:
        ConfigError: naming the file, the line and the problem.
    """
    raw = read_named_file(path, "a job type declaration (YAML)", ConfigError)
    try:
        text = raw.decode("utf-8")
        data = yaml.safe_load(text)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML: "
                          f"{getattr(err, 'problem', None) or err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a job type declaration is a mapping (name:, title:, program:, args: ...)")
    try:
        return JobTypeDecl.model_validate(data).spec(str(path))
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        line = _line_of(text, loc)
        field = ".".join(str(k) for k in loc) or "(top level)"
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise ConfigError(f"{path}{f':{line}' if line else ''}: {field}: {first['msg']}{more}") from None


def load_folder(folder: Path) -> tuple[list[JobTypeSpec], list[str]]:
    """Every ``*.yaml`` declaration in ``folder``: the good ones, and one message per broken one."""
    specs, errors = [], []
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            specs.append(load_declaration(path))
        except ConfigError as err:
            errors.append(str(err))
    return specs, errors


def declared_spec(decl: dict[str, Any], name: str) -> JobTypeSpec:
    """The job type a job carries in its ``job.json`` (no declaration file needed where it runs).

    Raises:
        ConfigError: the declaration does not validate (a job.json edited by hand).
    """
    try:
        return JobTypeDecl.model_validate(decl).spec(f"job.json of a {name} job")
    except ValidationError as err:
        raise ConfigError(f"job.json: the {name} declaration is broken: {err.errors()[0]['msg']}") from None
