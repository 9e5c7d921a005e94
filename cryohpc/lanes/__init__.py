"""Lanes: where jobs run. Built from site configs by :func:`build_lanes`."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import (
    BatchLane,
    Lane,
    Launched,
    LaunchRequest,
    NodeLane,
    PollResult,
    RunHandle,
    RunState,
    job_tag,
    worker_env,
)
from .errors import LaneUnreachable, LaunchRefused, LaunchUnconfirmed
from .local import LocalLane
from .siteconfig import ClusterLaneConfig, LaneConfig, load_lane_configs


def build_lane(cfg: LaneConfig, instance_uid: str = "dev", template_dirs: list[Path] | None = None) -> Lane:
    """A lane object; cluster lanes render their templates now, so errors show at load.
    ``template_dirs``: where else to look for script templates (an instance's
    ``templates/`` when the config file lies elsewhere).

    Raises:
        ConfigError: the lane's templates or commands do not render.
    """
    if isinstance(cfg, ClusterLaneConfig):
        from .cluster import ClusterLane

        return ClusterLane(cfg, instance_uid, template_dirs)
    if cfg.kind == "ssh":
        from .workers import SshWorkerLane

        return SshWorkerLane(cfg)
    return LocalLane(cfg)


def build_lanes(dirs: list[Path], instance_uid: str = "dev", problems: list[str] | None = None) -> dict[str, Lane]:
    """Every lane of the site configs; with ``problems``, a broken file or lane costs only
    itself (its error appended), otherwise the first error raises ``ConfigError``."""
    lanes = {}
    for name, cfg in load_lane_configs(dirs, problems).items():
        try:
            lanes[name] = build_lane(cfg, instance_uid)
        except ConfigError as err:
            if problems is None:
                raise
            problems.append(str(err))
    return lanes


__all__ = ["BatchLane", "Lane", "LaneUnreachable", "LaunchRefused", "LaunchRequest", "LaunchUnconfirmed", "Launched",
           "NodeLane", "PollResult", "RunHandle", "RunState", "build_lane", "job_tag", "build_lanes", "load_lane_configs",
           "worker_env"]
