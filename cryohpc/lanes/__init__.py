"""Lanes: where jobs run. Built from site configs by :func:`build_lanes`."""

from __future__ import annotations

from pathlib import Path

from .base import Lane, Launched, PollResult, RunState
from .local import LocalLane
from .siteconfig import LaneConfig, load_lane_configs


def build_lane(cfg: LaneConfig) -> Lane:
    return LocalLane(cfg)


def build_lanes(dirs: list[Path]) -> dict[str, Lane]:
    return {name: build_lane(cfg) for name, cfg in load_lane_configs(dirs).items()}


__all__ = ["Lane", "Launched", "PollResult", "RunState", "build_lane", "build_lanes", "load_lane_configs"]
