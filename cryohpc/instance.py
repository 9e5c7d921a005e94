"""An opened instance: its paths, settings, database and lanes."""

from __future__ import annotations

import os
import threading
from functools import cached_property
from pathlib import Path

from .config import InstanceConfig, InstancePaths, init_instance, load_config, resolve_home
from .errors import NotFoundError
from .jobtypes import use_site_jobtypes
from .lanes import Lane, build_lanes, load_lane_configs
from .lanes.siteconfig import LaneConfig
from .store import Store
from .wakeup import wake_master


class Instance:
    """Everything the master and the CLI share about one ``--home``."""

    def __init__(self, home: str | os.PathLike | None = None):
        self.home = resolve_home(home)
        self.paths = InstancePaths(self.home)
        self.config: InstanceConfig = load_config(self.home)
        use_site_jobtypes(self.paths.jobtypes)
        # site-config problems of the last lane load, per thread: a master running in a thread
        # beside the API (tests, scripts) must not reset what a queue check is about to report
        self._loads = threading.local()

    @classmethod
    def create(cls, home: str | os.PathLike | None = None, projects_root: Path | None = None, **settings) -> Instance:
        init_instance(resolve_home(home), projects_root, **settings)
        inst = cls(home)
        _ = inst.store  # creates the database and applies migrations
        return inst

    @cached_property
    def store(self) -> Store:
        wake = self.paths.master_wake
        return Store(self.paths.db, on_commit=lambda: wake_master(wake))

    @property
    def lane_problems(self) -> list[str]:
        """Site-config errors of this thread's last lane load."""
        return getattr(self._loads, "problems", [])

    @lane_problems.setter
    def lane_problems(self, problems: list[str]) -> None:
        self._loads.problems = problems

    def lane_configs(self, strict: bool = True) -> dict[str, LaneConfig]:
        """The site configs' lanes; not ``strict``, a broken file costs only its own lanes
        (its error is kept in ``lane_problems``)."""
        self.lane_problems = []
        return load_lane_configs([self.paths.site_configs], None if strict else self.lane_problems)

    def no_lane(self, name: str, lanes: dict) -> NotFoundError:
        """The error for a lane that is not there, with the site-config problems that may
        explain why (each disabled only its own lanes)."""
        broken = "".join(f"\n  site config problem: {p}" for p in self.lane_problems)
        return NotFoundError(f"no lane {name!r} (lanes: {', '.join(sorted(lanes))}){broken}")

    def build_lanes(self, strict: bool = False) -> dict[str, Lane]:
        """The lanes jobs can use now: a broken site config or lane disables only itself
        (its error is kept in ``lane_problems``), unless ``strict``."""
        self.lane_problems = []
        return build_lanes([self.paths.site_configs], self.config.instance_uid,
                           None if strict else self.lane_problems)
