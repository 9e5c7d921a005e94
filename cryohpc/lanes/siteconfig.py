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
from ..named_files import read_named_file
from ..text import check_line
from ..values import parse_scalar

MAX_WARM_RANKS = 256


class SiteModel(BaseModel):
    """A site-config record: every text in it (paths, commands, environment values,
    custom values) may reach a script or a command line, so each is one line without
    control characters. Help texts and descriptions are exempt: they never do."""

    @model_validator(mode="after")
    def _one_line_texts(self) -> Any:
        for name, value in self:
            if name in ("help", "title", "description", "source"):
                continue
            for where, text in _texts(name, value):
                check_line(text, where)
        return self


def _texts(where: str, value: Any):
    """(location, text) of every string inside ``value``, keys of mappings included."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _texts(f"{where}.{k}", k)
            yield from _texts(f"{where}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _texts(f"{where}[{i}]", v)


class CacheFields(SiteModel):
    """SSD cache settings, for a machine (node lane, worker target) or a cluster's nodes."""

    model_config = ConfigDict(extra="forbid")

    cache_path: str | None = Field(default=None, description="SSD cache folder; may name $VARIABLES resolved "
                                                              "where the job runs, e.g. $SLURM_TMPDIR")
    cache_quota_mb: float | None = Field(default=None, ge=0, description="most the cache may hold")
    cache_reserve_mb: float = Field(default=10_000, ge=0, description="free space the cache leaves")
    cache_lifetime_days: float = Field(default=30, gt=0, description="files unused this long are removed")
    cache_threads: int = Field(default=2, ge=1, description="parallel copies")

    def cache_settings(self) -> dict | None:
        """What ``job.json`` carries for the worker's cache, or None without a cache."""
        if not self.cache_path:
            return None
        return {"path": self.cache_path, "quota_mb": self.cache_quota_mb, "reserve_mb": self.cache_reserve_mb,
                "lifetime_days": self.cache_lifetime_days, "threads": self.cache_threads}


class SshHost(SiteModel):
    """How the master reaches a machine over SSH (a worker target or a login node)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, description="host name or address")
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = Field(default=None, description="login name (default: the master's user)")
    identity_file: str | None = Field(default=None, description="private key (default: ssh-agent and ~/.ssh/id_*)")
    known_hosts: str = Field(default="~/.ssh/known_hosts", description="host keys trusted for this host")
    host_key_policy: Literal["verify", "accept-new"] = Field(
        default="verify", description="'accept-new' records an unknown host's key on first contact")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    keepalive_s: int = Field(default=15, ge=0, description="SSH keepalive interval on the kept connection")
    max_channels: int = Field(default=8, ge=1, description="commands in flight at once on the connection")
    max_connects_per_min: int = Field(default=6, ge=1, description="new connections allowed per minute")
    retries: int = Field(default=2, ge=0, description="extra connection attempts, with jittered backoff")
    breaker_threshold: int = Field(default=3, ge=1, description="failed attempts in a row that mark the host unreachable")
    breaker_cooldown_s: float = Field(default=30.0, gt=0, description="wait before trying an unreachable host again")

    @property
    def address(self) -> str:
        return self.host if self.port == 22 else f"{self.host}:{self.port}"


class WorkerTarget(SshHost, CacheFields):
    """A worker machine of a node lane, reached over SSH (CryoSPARC's ``cryosparcw connect``).

    The job directories must be on a filesystem it shares with the master, at the same path.
    """

    lane: str | None = Field(default=None, description="the node lane it serves (in a top-level 'workers:' list)")
    name: str | None = Field(default=None, description="target name used with 'job queue --target' (default: host[:port])")
    title: str = ""
    gpus: list[int] = Field(default_factory=list, description="GPU ids jobs may use")
    cpus: int = Field(default=1, ge=1, description="CPU cores jobs may use")
    ram_gb: float = Field(default=4.0, gt=0, description="memory jobs may use")
    python: str | None = Field(default=None, description="Python with cryohpc installed there (default: the master's path)")
    mpiexec: str | None = Field(default=None, description="MPI launcher there (default: the one beside that Python)")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for its workers")
    source: str | None = Field(default=None, description="the file it came from (set on load)")

    @model_validator(mode="after")
    def _name(self) -> WorkerTarget:
        if self.name is None:
            self.name = self.address
        return self


class NodeLaneConfig(CacheFields):
    """A lane of worker machines reached directly: ``kind: local`` is this machine,
    ``kind: ssh`` the worker targets listed under ``workers``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="lane name used with 'job queue --lane'")
    title: str = Field(default="", description="shown in 'lane list'")
    type: Literal["node"] = Field(default="node", description="node: workers started directly")
    kind: Literal["local", "ssh"] = Field(default="local", description="local: this machine; ssh: worker targets")
    workers: list[WorkerTarget] = Field(default_factory=list, description="kind ssh: the worker targets")
    source: str | None = Field(default=None, description="the file this lane came from (set on load)")
    cpus: int | None = Field(default=None, ge=1, description="CPU cores jobs may use (default: all)")
    ram_gb: float | None = Field(default=None, gt=0, description="memory jobs may use (default: all)")
    gpus: list[int] | None = Field(default=None, description="GPU ids (default: those nvidia-smi lists)")
    mpiexec: str | None = Field(default=None, description="MPI launcher (default: the one beside this Python)")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for workers")
    poll_interval_s: float = Field(default=5.0, gt=0, description="kind ssh: least time between status queries")
    oversubscribe: bool = Field(default=False, description="let a job's MPI ranks outnumber a machine's CPUs")
    warm_ranks: list[Annotated[int, Field(ge=1, le=MAX_WARM_RANKS)]] = Field(
        default_factory=list, description="kind local: rank counts of CPU jobs kept a worker started ahead, "
                                          "imports and compiled kernels loaded (each waiting rank holds ~190 MB resident)")

    @model_validator(mode="after")
    def _warm_only_local(self) -> NodeLaneConfig:
        if self.warm_ranks and self.kind != "local":
            raise ValueError("warm_ranks applies to kind local only (worker targets start their workers over SSH)")
        return self


SchedulerKind = Literal["slurm", "pbs", "sge"]


class CustomVar(SiteModel):
    """A site-defined variable for submission scripts (account, partition, QOS...)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="as the template names it")
    type: Literal["str", "int", "float", "bool", "enum"] = Field(default="str", description="values are checked "
                                                                                          "against it when set")
    default: Any = Field(default=None, description="used when neither lane, project nor job sets one")
    help: str = Field(default="", description="shown by 'lane show' and in errors")
    required: bool = Field(default=False, description="a job may not be queued without a value")
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
            text = parse_scalar("str", value)
        except ValueError as err:
            raise ValueError(f"custom variable {self.name!r} ({where}): {err}") from None
        except TypeError:
            raise ValueError(f"custom variable {self.name!r} ({where}): {value!r} is not a valid {self.type}") from None
        if self.type == "enum" and text not in self.choices:
            raise ValueError(f"custom variable {self.name!r} ({where}): {text!r} is not one of {', '.join(self.choices)}")
        return text


class WorkerSettings(CacheFields):
    """How a compute node runs workers."""

    bin_path: str | None = Field(default=None, description="cryohpc-worker on the nodes (default: this Python's)")


RequeueCause = Literal["node_fail", "preempted", "time_limit", "timeout"]


class ClusterLaneConfig(SiteModel):
    """A lane whose jobs go to a batch scheduler through rendered submission scripts."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="lane name used with 'job queue --lane'")
    title: str = Field(default="", description="shown in 'lane list'")
    description: str = Field(default="", description="free text (CryoSPARC's desc)")
    type: Literal["cluster"] = Field(description="cluster: jobs go to a batch scheduler")
    kind: SchedulerKind = Field(description="slurm, pbs or sge")
    script_template: str = Field(description="file under templates/ (or an absolute path)")
    submit_cmd: str | None = Field(default=None, description="Jinja2; default per kind, e.g. sbatch --parsable ...")
    status_cmd: str | None = Field(default=None, description="states of cryohpc's jobs: {{ job_ids }} (a,b,c) or "
                                                             "{{ job_id_args }} (a b c); default per kind")
    cancel_cmd: str | None = Field(default=None, description="stops {{ cluster_job_id }}; default per kind")
    info_cmd: str | None = Field(default=None, description="what 'lane test' shows first; default per kind")
    find_cmd: str | None = Field(default=None, description="lists live scheduler jobs carrying {{ job_name }}, "
                                                           "cryohpc's tag; asked only after a submit's answer was lost")
    history_cmd: str | None = Field(default=None, description="verdicts of {{ job_ids }} that left the queue "
                                                              "(default SLURM: sacct; '' turns it off)")
    accounting_cmd: str | None = Field(default=None, description="what ended {{ job_ids }} used, as the scheduler "
                                                                  "accounts it (default SLURM: sacct; '' turns it off)")
    send_cmd: str | SshHost | None = Field(
        default=None, description="run commands elsewhere: a wrapper template such as 'ssh login01 {{ command }}', "
                                  "or a login node (host, port, user...) reached through cryohpc's SSH session manager")
    mpi_launcher: str | None = Field(default=None, description="e.g. 'srun --mpi=pmi2' (default: mpiexec -n RANKS)")
    poll_interval_s: float = Field(default=10.0, gt=0, description="least time between status queries (one "
                                                                   "query covers all the lane's jobs)")
    command_timeout_s: float = Field(default=60.0, gt=0, description="a scheduler command running longer "
                                                                     "is given up (and its outcome looked for)")
    worker: WorkerSettings = Field(default_factory=WorkerSettings, description="worker program and SSD cache "
                                                                               "on the nodes (below)")
    requeue_on: list[RequeueCause] = Field(
        default_factory=lambda: ["node_fail", "preempted", "time_limit"],
        description="scheduler endings after which a job is queued again by itself, resuming from its checkpoints: "
                    "node_fail, preempted, time_limit (the job stopped at the warning signal before its time "
                    "limit), timeout (killed at the limit without stopping first); [] turns it off")
    max_requeues: int = Field(default=3, ge=0, le=1000, description="automatic requeues per queueing of a job; "
                                                                     "one more such ending fails it")
    stop_warning_s: int = Field(default=120, ge=10, le=86400, description="seconds before the time limit at "
                                "which templates ask for a warning signal (SLURM --signal=B:USR2@N): the worker "
                                "checkpoints and stops, to be requeued")
    custom_vars: list[CustomVar] = Field(default_factory=list, description="site variables for templates (below)")
    custom_values: dict[str, Any] = Field(default_factory=dict, description="lane-level values of custom variables")
    env: dict[str, str] = Field(default_factory=dict, description="environment of the scheduler commands")
    cryosparc: dict[str, str] = Field(default_factory=dict, description="what only CryoSPARC uses, kept by "
                                                                      "'lane import-cryosparc' for the export")
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
_WORKER = TypeAdapter(WorkerTarget)


WARM_RANKS_VAR = "CRYOHPC_LOCAL_WARM_RANKS"
DEFAULT_WARM_RANKS = "1,2"  # the default job's one rank, and two: one per core of the smallest machines


def default_local_lane() -> NodeLaneConfig:
    """The lane of this machine when no site config defines ``local``: its warm workers
    are ``$CRYOHPC_LOCAL_WARM_RANKS`` (comma-separated rank counts; empty for none).

    Raises:
        ConfigError: that variable is not such a list.
    """
    text = os.environ.get(WARM_RANKS_VAR, DEFAULT_WARM_RANKS)
    try:
        ranks = [int(part) for part in text.split(",") if part.strip()]
        return NodeLaneConfig(name="local", title="This machine", warm_ranks=ranks)
    except (ValueError, ValidationError):
        raise ConfigError(f"{WARM_RANKS_VAR}={text!r}: expected rank counts between 1 and {MAX_WARM_RANKS} "
                          "separated by commas, e.g. 1,2 (empty for no warm workers)") from None


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


def load_site_config(path: Path) -> list[SiteEntry]:
    """Raises:
    ConfigError: YAML syntax, unknown key or wrong type; the message names file, line, key.
    """
    raw = read_named_file(path, "a site config (YAML)", ConfigError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
                          "save it as UTF-8") from err
    lanes, workers = _parse_site_config(path, text)
    return lanes + workers


SiteEntry = LaneConfig | WorkerTarget


def _parse_site_config(path: Path, text: str) -> tuple[list[LaneConfig], list[WorkerTarget]]:
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(err, 'problem', err)}") from err
    if not isinstance(data, dict) or not ({"lanes", "workers"} & set(data)) or set(data) - {"lanes", "workers"}:
        raise ConfigError(f"{path}: expected a mapping with a 'lanes:' and/or a 'workers:' list")
    lanes: list[LaneConfig] = []
    workers: list[WorkerTarget] = []
    for section, adapter, out in (("lanes", _LANE, lanes), ("workers", _WORKER, workers)):
        entries = data.get(section) or []
        node = next((v for k, v in root.value if k.value == section), None)
        if not isinstance(entries, list):
            raise ConfigError(f"{path}:{_line_of(node, ())}: '{section}:' must be a list")
        for i, entry in enumerate(entries):
            try:
                if section == "lanes" and isinstance(entry, dict):
                    entry = {"type": "node", **entry}
                item = adapter.validate_python(entry)
            except ValidationError as err:
                e = err.errors()[0]
                loc = tuple(x for x in e["loc"] if x not in ("node", "cluster"))  # drop the union's tag
                key = ".".join(str(x) for x in loc) or "(entry)"
                raise ConfigError(f"{path}:{_line_of(node, (i, *loc))}: {section}[{i}].{key}: {e['msg']}") from err
            item.source = str(path) if section == "lanes" else f"{path}:{_line_of(node, (i,))}"
            if section == "workers" and not item.lane:
                raise ConfigError(f"{item.source}: workers[{i}]: 'lane' names the node lane it serves")
            for w in getattr(item, "workers", []):
                w.source = item.source
            out.append(item)
    return lanes, workers


def load_lane_configs(dirs: list[Path], problems: list[str] | None = None) -> dict[str, LaneConfig]:
    """All lanes of the given site-config directories, each ssh node lane with its worker
    targets (listed inline or in any file's top-level ``workers:``); a later file may not
    redefine a lane, nor a lane list a target name twice.

    With ``problems`` (a list), a broken file or entry costs only its own lanes and
    workers: its error is appended and the rest load. Without, the first error raises.

    Raises:
        ConfigError: naming the file, line and key (only without ``problems``).
    """
    def refuse(err: ConfigError) -> None:
        if problems is None:
            raise err
        problems.append(str(err))

    lanes: dict[str, LaneConfig] = {}
    origin: dict[str, Path] = {}
    loose: list[WorkerTarget] = []
    for d in dirs:
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            try:
                entries = load_site_config(path)
            except ConfigError as err:
                refuse(err)
                continue
            for entry in entries:
                if isinstance(entry, WorkerTarget):
                    loose.append(entry)
                elif entry.name in origin:
                    refuse(ConfigError(f"{path}: lane {entry.name!r} is already defined in {origin[entry.name]}"))
                else:
                    lanes[entry.name] = entry
                    origin[entry.name] = path
    if "local" not in lanes:
        try:
            lanes["local"] = default_local_lane()
        except ConfigError as err:
            refuse(err)
            lanes["local"] = NodeLaneConfig(name="local", title="This machine")
    for w in loose:
        lane = lanes.get(w.lane or "")
        if not isinstance(lane, NodeLaneConfig) or lane.kind != "ssh":
            ssh_lanes = [n for n, c in lanes.items() if isinstance(c, NodeLaneConfig) and c.kind == "ssh"]
            refuse(ConfigError(f"{w.source}: worker {w.name}: lane {w.lane!r} is not a node lane of kind ssh "
                               f"(those are: {', '.join(ssh_lanes) or 'none'})"))
            continue
        lane.workers.append(w)
    for lane in lanes.values():
        seen: dict[str, str | None] = {}
        kept = []
        for w in getattr(lane, "workers", []):
            if w.name in seen:
                refuse(ConfigError(f"{w.source}: worker {w.name} of lane {lane.name!r} is already defined at "
                                   f"{seen[w.name]}"))
                continue
            seen[w.name] = w.source
            w.lane = lane.name
            kept.append(w)
        if isinstance(lane, NodeLaneConfig):
            lane.workers = kept
    return lanes
