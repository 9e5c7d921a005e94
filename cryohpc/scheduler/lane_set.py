"""The lanes the master uses, kept in step with the site configs: reloaded when a file
changes; a lane whose config did not change keeps its object (the local lane holds its
child processes); a config that no longer loads leaves the lanes in use as they were.
Worker targets' reachability is published to the database on change."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ..errors import CryohpcError
from ..instance import Instance
from ..lanes import Lane, NodeLane
from ..model import now

log = logging.getLogger("cryohpc.scheduler")
SETTLE_S = 1.0  # site-config files changed more recently than this are read again next pass


def _stats(files: list[Path]) -> list[tuple[Path, os.stat_result]]:
    """Each file's stat; one removed since the listing (an admin's ``lane remove``) is left
    out, and the next pass sees the folder as it is then."""
    out = []
    for f in files:
        try:
            out.append((f, f.stat()))
        except FileNotFoundError:
            continue
    return out


class LaneSet:
    def __init__(self, inst: Instance, fixed: dict[str, Lane] | None = None):
        self.inst = inst
        self._fixed = fixed is not None
        self.lanes: dict[str, Lane] = fixed if fixed is not None else {}
        self._stamp: tuple = ()
        self._published: dict[tuple[str, str], str] = {}
        self.reload()

    def __call__(self) -> dict[str, Lane]:
        return self.lanes

    def reload(self, force: bool = False) -> None:
        """Read the site configs again if a file changed (``force``: whatever the stamps say)."""
        if self._fixed:
            return
        folder = self.inst.paths.site_configs
        files = sorted(folder.glob("*.y*ml")) if folder.is_dir() else []
        stats = _stats(files)
        stamp = tuple((str(f), st.st_mtime_ns, st.st_size) for f, st in stats)
        if stamp == self._stamp and self.lanes and not force:
            return
        try:
            fresh = self.inst.build_lanes()
        except CryohpcError as err:  # the folder itself unreadable
            log.error("site configs not reloaded, keeping the lanes in use: %s", err)
            self._stamp = stamp
            return
        for problem in self.inst.lane_problems:  # once per change of the files, not per pass
            log.error("site config: %s", problem)
        for name, lane in fresh.items():
            old = self.lanes.get(name)
            if old is not None and getattr(old, "cfg", None) == getattr(lane, "cfg", None):
                fresh[name] = old
        if self.inst.lane_problems:  # a lane whose file broke keeps running as it was
            for name, old in self.lanes.items():
                if name not in fresh:
                    log.warning("lane %s kept as it was while its site config is broken", name)
                    fresh[name] = old
        # a file changed within the last second may still be being written (its truncation and
        # its last write can share one coarse mtime tick): read it again at the next pass
        settled = all(time.time() - st.st_mtime > SETTLE_S for _, st in stats)
        dropped = [lane for lane in self.lanes.values() if all(lane is not kept for kept in fresh.values())]
        self.lanes, self._stamp = fresh, stamp if settled else ()
        for lane in dropped:  # its running jobs go on; what it ran for no job stops
            self._guarded(lane, lane.close)

    def tend(self) -> None:
        """Each lane's upkeep, each in its own guard: one lane's trouble is its own."""
        for lane in self.lanes.values():
            self._guarded(lane, lane.tend)

    def close(self) -> None:
        for lane in self.lanes.values():
            self._guarded(lane, lane.close)

    @staticmethod
    def _guarded(lane: Lane, action) -> None:
        try:
            action()
        except (CryohpcError, OSError) as err:
            log.error("lane %s: %s failed: %s", lane.name, action.__name__, err)

    def publish_target_states(self) -> None:
        """Worker targets' reachability for 'cryohpc worker list', written on change only."""
        changed = []
        for lane in self.lanes.values():
            if not isinstance(lane, NodeLane):
                continue
            for target, (state, since, detail) in lane.target_states().items():
                if self._published.get((lane.name, target)) != state:
                    changed.append((lane.name, target, state, since or now(), detail))
        if not changed:
            return
        with self.inst.store.write() as tx:
            for lane_name, target, state, since, detail in changed:
                tx.put_worker_state(lane_name, target, state, since, detail)
        for lane_name, target, state, _, detail in changed:
            self._published[(lane_name, target)] = state
            log.log(logging.WARNING if state == "unreachable" else logging.INFO,
                    "worker %s of lane %s is %s %s", target, lane_name, state, detail)
