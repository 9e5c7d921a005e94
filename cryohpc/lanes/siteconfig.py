"""Lanes as site admins write them: YAML files under ``<home>/site-configs/``.

Every file holds ``lanes: [...]``. Errors name the file, the line and the key. A lane
named ``local`` exists even without any file (this machine, all of it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ..errors import ConfigError
from ..values import parse_scalar


class NodeLaneConfig(BaseModel):
    """A lane of worker machines reached directly; ``kind: local`` is this machine."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="lane name used with 'job queue --lane'")
    title: str = ""
    type: Literal["node"] = "node"
    kind: Literal["local"] = "local"
    cpus: int | None = Field(default=None, ge=1, description="CPU cores jobs may use (default: all)")
    ram_gb: float | None = Field(default=None, gt=0, description="memory jobs may use (default: all)")
    gpus: list[int] | None = Field(default=None, description="GPU ids (default: those nvidia-smi lists)")
    mpiexec: str | None = Field(default=None, description="MPI launcher (default: the one beside this Python)")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for workers")
    cache_path: str | None = Field(default=None, description="SSD cache folder; may name $VARIABLES")
    cache_quota_mb: float | None = Field(default=None, ge=0, description="most the cache may hold")
    cache_reserve_mb: float = Field(default=10_000, ge=0, description="free space the cache leaves")
    cache_lifetime_days: float = Field(default=30, gt=0, description="files unused this long are removed")
    cache_threads: int = Field(default=2, ge=1, description="parallel copies")


SchedulerKind = Literal["slurm", "pbs", "sge"]


class CustomVar(BaseModel):
    """A site-defined variable for submission scripts (account, partition, QOS...)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: Literal["str", "int", "float", "bool", "enum"] = "str"
    default: Any = None
    help: str = ""
    required: bool = False
    choices: list[str] = Field(default_factory=list, description="allowed values of an enum")

    @model_validator(mode="after")
    def _check(self) -> CustomVar:
        if self.type == "enum" and not self.choices:
            raise ValueError(f"custom variable {self.name!r} is an enum without choices")
        if self.default is not None:
            self.default = self.coerce(self.default, "default")
        return self

    def coerce(self, value: Any, where: str) -> Any:
        """The value as this variable's type.

        Raises:
            ValueError: naming the variable, the value and where it was set.
        """
        try:
            if self.type != "enum":
                return parse_scalar(self.type, value)
        except (TypeError, ValueError):
            raise ValueError(f"custom variable {self.name!r} ({where}): {value!r} is not a valid {self.type}") from None
        text = str(value)
        if self.type == "enum" and text not in self.choices:
            raise ValueError(f"custom variable {self.name!r} ({where}): {text!r} is not one of {', '.join(self.choices)}")
        return text


class WorkerSettings(BaseModel):
    """How a compute node runs workers."""

    model_config = ConfigDict(extra="forbid")

    bin_path: str | None = Field(default=None, description="cryohpc-worker on the nodes (default: this Python's)")
    cache_path: str | None = Field(default=None, description="SSD cache; may name a variable resolved on the node, e.g. $SLURM_TMPDIR")
    cache_quota_mb: int | None = Field(default=None, ge=0)
    cache_reserve_mb: int = Field(default=10_000, ge=0)
    cache_lifetime_days: float = Field(default=30, gt=0)
    cache_threads: int = Field(default=2, ge=1)


class ClusterLaneConfig(BaseModel):
    """A lane whose jobs go to a batch scheduler through rendered submission scripts."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    title: str = ""
    type: Literal["cluster"]
    kind: SchedulerKind
    script_template: str = Field(description="file under templates/ (or an absolute path)")
    submit_cmd: str | None = Field(default=None, description="Jinja2; default per kind, e.g. sbatch --parsable ...")
    status_cmd: str | None = None
    cancel_cmd: str | None = None
    info_cmd: str | None = None
    find_cmd: str | None = Field(default=None, description="lists scheduler jobs by their cryohpc tag")
    send_cmd: str | None = Field(default=None, description="wrapper to run commands elsewhere, e.g. ssh login01 {{ command }}")
    mpi_launcher: str | None = Field(default=None, description="e.g. 'srun --mpi=pmi2' (default: mpiexec -n RANKS)")
    poll_interval_s: float = Field(default=10.0, gt=0)
    command_timeout_s: float = Field(default=60.0, gt=0)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    custom_vars: list[CustomVar] = Field(default_factory=list)
    custom_values: dict[str, Any] = Field(default_factory=dict, description="lane-level values of custom variables")
    env: dict[str, str] = Field(default_factory=dict)
    source: str | None = Field(default=None, description="the file this lane came from (set on load)")

    @model_validator(mode="after")
    def _check_values(self) -> ClusterLaneConfig:
        declared = {v.name: v for v in self.custom_vars}
        for key, value in self.custom_values.items():
            if key not in declared:
                raise ValueError(f"custom_values sets {key!r}, which custom_vars does not declare")
            self.custom_values[key] = declared[key].coerce(value, "lane")
        return self


LaneConfig = Annotated[NodeLaneConfig | ClusterLaneConfig, Field(discriminator="type")]
_LANE = TypeAdapter(LaneConfig)


def default_local_lane() -> NodeLaneConfig:
    return NodeLaneConfig(name="local", title="This machine")


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """Line (1-based) of the YAML node at a pydantic error location, as deep as it goes."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == key), None)
            if nxt is None:
                nxt = next((k for k, _ in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = node.value[key]
        else:
            nxt = None
        if nxt is None:
            break
        node, line = nxt, nxt.start_mark.line + 1
    return line


def load_site_config(path: Path) -> list[LaneConfig]:
    """Raises:
    ConfigError: YAML syntax, unknown key or wrong type; the message names file, line, key.
    """
    text = path.read_text()
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(err, 'problem', err)}") from err
    if not isinstance(data, dict) or not isinstance(data.get("lanes"), list):
        raise ConfigError(f"{path}: expected a mapping with a 'lanes:' list")
    lanes_node = next((v for k, v in root.value if k.value == "lanes"), None)
    out: list[LaneConfig] = []
    for i, entry in enumerate(data["lanes"]):
        try:
            if isinstance(entry, dict):
                entry = {"type": "node", **entry}
            lane = _LANE.validate_python(entry)
            if isinstance(lane, ClusterLaneConfig):
                lane.source = str(path)
            out.append(lane)
        except ValidationError as err:
            e = err.errors()[0]
            loc = tuple(x for x in e["loc"] if x not in ("node", "cluster"))  # drop the union's tag
            line = _line_of(lanes_node, (i, *loc))
            key = ".".join(str(x) for x in loc) or "(lane)"
            raise ConfigError(f"{path}:{line}: lanes[{i}].{key}: {e['msg']}") from err
    return out


def load_lane_configs(dirs: list[Path]) -> dict[str, LaneConfig]:
    """All lanes of the given site-config directories; a later file may not redefine a lane."""
    lanes: dict[str, LaneConfig] = {}
    origin: dict[str, Path] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            for lane in load_site_config(path):
                if lane.name in origin:
                    raise ConfigError(f"{path}: lane {lane.name!r} is already defined in {origin[lane.name]}")
                lanes[lane.name] = lane
                origin[lane.name] = path
    lanes.setdefault("local", default_local_lane())
    return lanes


def machine_ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        return 4.0
