"""Lanes as site admins write them: YAML files under ``<home>/site-configs/``.

Every file holds ``lanes: [...]``. Errors name the file, the line and the key. A lane
named ``local`` exists even without any file (this machine, all of it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError


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


LaneConfig = NodeLaneConfig  # cluster lanes join this union later


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
            out.append(NodeLaneConfig.model_validate(entry))
        except ValidationError as err:
            e = err.errors()[0]
            loc = tuple(e["loc"])
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
