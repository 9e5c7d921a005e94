"""One action over a selection of jobs: a plan first (job by job, what will happen or why
it is skipped), then each job done in its own transaction, with the outcome written to
the operation journal inside that same transaction. A run that is interrupted (CLI or
master killed) leaves every job done or untouched; the same command run again plans the
rest, skipping what the interrupted run already did."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import CryohpcError, UserError
from ..instance import Instance
from ..selections import Selection, select, topological
from .common import owner
from .context import ActionContext

RESTART = "restart"
CHILDREN_FIRST = {"clear", "delete"}  # a parent's files may go once its selected children have gone


@dataclass
class PlanItem:
    job_uid: str
    type: str = ""
    title: str = ""
    status: str = ""
    will: bool = False
    what: str = ""  # what the action will do, or why the job is skipped
    outcome: str | None = None  # done / failed, once run
    detail: str = ""


@dataclass
class Plan:
    project_uid: str
    action: str
    selection: str
    args: dict[str, Any]
    items: list[PlanItem] = field(default_factory=list)
    operation_id: int | None = None

    @property
    def todo(self) -> list[PlanItem]:
        return [i for i in self.items if i.will]

    def as_dict(self) -> dict:
        return {"project_uid": self.project_uid, "action": self.action, "selection": self.selection,
                "args": self.args, "operation_id": self.operation_id, "jobs": [asdict(i) for i in self.items]}

    def key(self) -> str:
        return json.dumps({"selection": self.selection, "args": self.args}, sort_keys=True, default=str)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _done_by_interrupted(inst: Instance, plan: Plan) -> tuple[dict[str, int], list[int]]:
    """Jobs an interrupted run of the same operation already did (uid -> operation id),
    and those operations."""
    done: dict[str, int] = {}
    ops = []
    with inst.store.read() as tx:
        for op in tx.operations(plan.project_uid, limit=50, unfinished=True):
            if op["action"] != plan.action or op["args"] != plan.key() or (op["pid"] != os.getpid()
                                                                            and _alive(op["pid"])):
                continue
            ops.append(op["id"])
            for j in op["jobs"]:
                if j["outcome"] == "done":
                    done.setdefault(j["job_uid"], op["id"])
    return done, ops


def make_plan(inst: Instance, project_uid: str, action: str, selection: Selection, **args: Any) -> Plan:
    """What ``action`` would do to each selected job, checked as the action checks it.

    Raises:
        UserError: no such action, an empty selection, or a job named by a filter that
            does not exist.
    """
    from . import ACTIONS

    if action not in ACTIONS:
        raise UserError(f"no job action {action!r} (actions: {', '.join(ACTIONS)})")
    check = ACTIONS[action].check
    ctx = ActionContext(inst)
    plan = Plan(project_uid, action, selection.describe(), {k: v for k, v in args.items() if v not in (None, [], ())})
    already, _ = _done_by_interrupted(inst, plan)
    with inst.store.read() as tx:
        jobs, missing = select(tx, project_uid, selection)
        if action in CHILDREN_FIRST:
            rank = {uid: i for i, uid in enumerate(reversed(topological(jobs)))}
            jobs = sorted(jobs, key=lambda j: rank[j.uid])
        for job in jobs:
            item = PlanItem(job.uid, job.type, job.title, job.status.value)
            if job.uid in already:
                item.what = f"skipped: already done by interrupted operation #{already[job.uid]}"
            else:
                try:
                    item.what, item.will = check(ctx, tx, job.model_copy(deep=True), **args), True
                    ctx.releasing.add(job.uid)
                except UserError as err:
                    item.what = f"skipped: {err}"
            plan.items.append(item)
    plan.items += [PlanItem(uid, what=f"skipped: {why}") for uid, why in missing]
    return plan


def run_plan(inst: Instance, plan: Plan) -> Plan:
    """Carry out a plan's jobs one by one; a job refused now (its state changed since the
    plan) is reported, not fatal. Returns the plan with outcomes filled in."""
    from . import ACTIONS, restart_lock

    apply = ACTIONS[plan.action].apply
    ctx = ActionContext(inst)
    _, interrupted = _done_by_interrupted(inst, plan)
    with inst.store.write() as tx:
        plan.operation_id = op = tx.start_operation(plan.project_uid, plan.action, plan.key(), owner(), os.getpid(),
                                                    len(plan.todo))
    extra = {"locked": True} if plan.action == RESTART else {}

    def journal(uid: str):
        return lambda tx: tx.record_outcome(op, uid, "done")

    def go() -> None:
        for item in plan.todo:
            try:
                apply(inst, plan.project_uid, item.job_uid, **plan.args, **extra, ctx=ctx, journal=journal(item.job_uid))
                item.outcome = "done"
            except CryohpcError as err:
                item.outcome, item.detail = "failed", str(err)
                with inst.store.write() as tx:
                    tx.record_outcome(op, item.job_uid, "failed", str(err))

    if plan.action == RESTART:
        with restart_lock(inst):
            go()
    else:
        go()
    with inst.store.write() as tx:
        for earlier in [*interrupted, op]:
            tx.finish_operation(earlier)
    return plan
