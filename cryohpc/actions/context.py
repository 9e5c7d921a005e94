"""What an action needs besides the database: the instance, and its lanes built once per
command (a multi-job action checks every job against the same lanes)."""

from __future__ import annotations

from collections.abc import Callable

from ..instance import Instance
from ..lanes import Lane
from ..store import Tx

Journal = Callable[[Tx], None]  # called inside an action's main transaction (the operation journal)


class ActionContext:
    def __init__(self, inst: Instance):
        self.inst = inst
        self._lanes: dict[str, Lane] | None = None
        # jobs a plan already clears or deletes before this one: children among them no
        # longer hold their parents' files
        self.releasing: set[str] = set()

    @property
    def lanes(self) -> dict[str, Lane]:
        if self._lanes is None:
            self._lanes = self.inst.build_lanes()
        return self._lanes


def journal_in(tx: Tx, journal: Journal | None) -> None:
    if journal is not None:
        journal(tx)
