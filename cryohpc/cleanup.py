"""The data cleanup tool (CryoSPARC v4.3+ "Data Cleanup"): choose what to clear or delete
in a project or workspace, see exactly what that frees, then do exactly that.

A preview decides, job by job, one of: delete, clear, trim (clear intermediate results
only), or nothing, with the bytes each frees from the recorded sizes (``disk_usage``);
jobs whose size was never measured, or ended after it was, are measured first, so the
figures are the files' own. Running the cleanup carries out those decisions, each
through the job action it names (the same checks and journal as ``cryohpc job ...``),
and reports the bytes actually freed beside the estimate.

Rules, as CryoSPARC's guide gives them: a final result is never cleared or deleted; an
ancestor of a final result may be cleared, never deleted; queued and running jobs are
never touched; a workspace's cleanup acts on the jobs in it (linked ones included) and
no other. Raw data imported from outside the project is never touched (imports hold
links to it, and links are removed, not followed).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from .actions import ActionContext, clear_intermediate, clear_job, delete_job
from .actions.common import owner, why_files_cannot_go
from .disk_usage import record_job_size
from .errors import CryohpcError, UserError
from .finals import protectors
from .instance import Instance
from .intermediates import intermediate_results
from .jobtypes import get_jobtype
from .model import Job, Project
from .selections import topological
from .sizes import measure
from .status import JobStatus

STALE_PROJECT_S = 24 * 3600.0
DELETE, CLEAR, TRIM = "delete", "clear", "trim"


@dataclass(frozen=True)
class CleanupOptions:
    """The guide's options; each ``delete_*`` is its "clear & delete" choice."""

    clear_preprocessing: bool = False
    include_extraction: bool = False  # also preprocessing jobs that write particle stacks
    clear_intermediate: bool = False
    clear_non_final: bool = False
    delete_non_final: bool = False
    clear_killed: bool = False
    delete_killed: bool = False
    clear_failed: bool = False
    delete_failed: bool = False

    def any(self) -> bool:
        return any(v for k, v in asdict(self).items() if k != "include_extraction")


@dataclass
class Decision:
    job_uid: str
    type: str
    status: str
    action: str | None  # delete / clear / trim / None
    bytes: int
    why: str  # which option chose it, or why it is left alone
    outcome: str | None = None  # done / skipped, once run
    detail: str = ""


@dataclass
class Tally:
    jobs: int = 0
    bytes: int = 0


@dataclass
class CleanupPreview:
    project_uid: str
    workspace: str | None
    options: CleanupOptions
    project_bytes: int  # project size on disk: job directories + other files
    project_jobs: int
    scope_bytes: int  # the jobs in scope (the workspace's, or the project's)
    measured_at: float | None
    notices: list[str]
    decisions: list[Decision]
    tabs: dict[str, dict[str, Tally]] = field(default_factory=dict)

    @property
    def to_do(self) -> list[Decision]:
        return [d for d in self.decisions if d.action]

    def estimate(self) -> dict[str, Tally]:
        out = {a: Tally() for a in (CLEAR, TRIM, DELETE)}
        for d in self.to_do:
            out[d.action].jobs += 1
            out[d.action].bytes += d.bytes
        return out

    @property
    def freed_bytes(self) -> int:
        return sum(d.bytes for d in self.to_do)

    @property
    def shrink_percent(self) -> float:
        return 100.0 * self.freed_bytes / self.project_bytes if self.project_bytes else 0.0

    def as_dict(self) -> dict:
        est = self.estimate()
        return {"project_uid": self.project_uid, "workspace": self.workspace, "options": asdict(self.options),
                "project_bytes": self.project_bytes, "project_jobs": self.project_jobs,
                "scope_bytes": self.scope_bytes, "measured_at": self.measured_at, "notices": self.notices,
                "estimate": {"jobs_cleared": est[CLEAR].jobs, "bytes_cleared": est[CLEAR].bytes,
                             "jobs_trimmed": est[TRIM].jobs, "bytes_trimmed": est[TRIM].bytes,
                             "jobs_deleted": est[DELETE].jobs, "bytes_deleted": est[DELETE].bytes,
                             "bytes_freed": self.freed_bytes, "project_shrinks_percent": round(self.shrink_percent, 2)},
                "tabs": {name: {k: asdict(t) for k, t in tab.items()} for name, tab in self.tabs.items()},
                "jobs": [asdict(d) for d in self.decisions]}


def _kind(job: Job) -> str:
    try:
        return get_jobtype(job.type).preprocessing or "other"
    except CryohpcError:
        return "other"


def _finality(job: Job, protected: dict[str, str]) -> str:
    if job.is_final_result:
        return "final"
    return "ancestor of final" if job.uid in protected else "non-final"


def _stale(job: Job) -> bool:
    if job.status == JobStatus.BUILDING and job.size_measured_at is not None:
        return False
    ended = max(job.status_times.values(), default=job.created_at)
    return job.size_measured_at is None or job.size_measured_at < ended


def _choose(job: Job, opts: CleanupOptions, protected: dict[str, str]) -> tuple[str | None, str]:
    """The strongest thing the options ask for this job, before state checks."""
    non_final = job.uid not in protected
    status = job.status
    killed, failed = status == JobStatus.KILLED, status == JobStatus.FAILED
    rules = [  # (asked and applies, decision, reason), strongest first
        (opts.delete_non_final and non_final, DELETE, "delete non-final jobs"),
        (opts.delete_killed and killed, DELETE, "delete killed jobs"),
        (opts.delete_failed and failed, DELETE, "delete failed jobs"),
        (opts.clear_non_final and non_final, CLEAR, "clear non-final jobs"),
        (opts.clear_killed and killed, CLEAR, "clear killed jobs"),
        (opts.clear_failed and failed, CLEAR, "clear failed jobs"),
    ]
    wants = [(decision, reason) for applies, decision, reason in rules if applies]
    kind = _kind(job)
    if opts.clear_preprocessing and (kind == "deterministic" or (kind == "extraction" and opts.include_extraction)):
        wants.append((CLEAR, "clear preprocessing jobs" + (" (extraction)" if kind == "extraction" else "")))
    if opts.clear_intermediate and status == JobStatus.COMPLETED and job.intermediate_size > 0:
        wants.append((TRIM, "clear intermediate results"))
    for action in (DELETE, CLEAR, TRIM):
        for a, why in wants:
            if a == action:
                return a, why
    return None, "no option selects it"


def _decide(tx, job: Job, opts: CleanupOptions, protected: dict[str, str], releasing: set[str]) -> Decision:
    action, why = _choose(job, opts, protected)
    d = Decision(job.uid, job.type, job.status.value, None, 0, why)
    if action is None:
        return d
    final = protected.get(job.uid)
    if action == DELETE and final is not None:
        action, why = (CLEAR, f"{why}: cleared only, ancestor of final result {final}") \
            if not job.is_final_result else (None, f"kept: final result ({why})")
    if action == CLEAR and job.is_final_result:
        action, why = (TRIM, f"final result: intermediate results only ({why})") \
            if opts.clear_intermediate and job.intermediate_size > 0 else (None, "kept: final result")
    if action in (CLEAR, DELETE):
        if job.status == JobStatus.QUEUED or job.status.active:
            return Decision(job.uid, job.type, job.status.value, None, 0, f"left alone: {job.status.value}")
        problem = why_files_cannot_go(tx, job, releasing)
        if problem:
            return Decision(job.uid, job.type, job.status.value, None, 0, f"left alone: {problem}")
        if action == CLEAR and job.status == JobStatus.BUILDING:
            return Decision(job.uid, job.type, job.status.value, None, 0, "nothing to clear (building)")
    d.action, d.why = action, why
    if action == TRIM:  # what is intermediate depends on the children's runs: asked now
        paths, versions = intermediate_results(tx, job)
        if not paths and not versions:
            return Decision(job.uid, job.type, job.status.value, None, 0, "no intermediate results left")
        d.bytes = measure(paths).bytes
    else:
        d.bytes = job.job_dir_size
    return d


def _tabs(jobs: list[Job], protected: dict[str, str]) -> dict[str, dict[str, Tally]]:
    tabs: dict[str, dict[str, Tally]] = {"job kinds": defaultdict(Tally), "intermediate results": defaultdict(Tally),
                                         "finality": defaultdict(Tally), "status": defaultdict(Tally)}
    for job in jobs:
        kind = {"deterministic": "preprocessing", "extraction": "preprocessing (extraction)"}.get(_kind(job), "other")
        for tab, key, size in (("job kinds", kind, job.job_dir_size),
                               ("finality", _finality(job, protected), job.job_dir_size),
                               ("status", job.status.value, job.job_dir_size)):
            tabs[tab][key].jobs += 1
            tabs[tab][key].bytes += size
        if job.intermediate_size:
            tabs["intermediate results"]["jobs with intermediate results"].jobs += 1
            tabs["intermediate results"]["jobs with intermediate results"].bytes += job.intermediate_size
    return {name: dict(tab) for name, tab in tabs.items()}


def _snapshot(inst: Instance, project_uid: str, workspace: str | None) -> tuple[Project, list[Job], list[Job]]:
    with inst.store.read() as tx:
        project = tx.get_project(project_uid)
        if workspace is not None:
            tx.get_workspace(project_uid, workspace)
        every = tx.list_jobs(project_uid)
    scope = [j for j in every if workspace is None or workspace in j.workspace_uids]
    return project, every, scope


def preview(inst: Instance, project_uid: str, options: CleanupOptions, workspace: str | None = None,
            measure: bool = False, progress: Callable[[str], None] | None = None) -> CleanupPreview:
    """What a cleanup with ``options`` would do, job by job, with the bytes it frees.

    Jobs it would touch whose size is unknown or older than their last status change
    (all of them with ``measure``) are measured first, with no transaction open."""
    project, every, scope = _snapshot(inst, project_uid, workspace)
    protected = protectors(every)
    candidates = [j for j in scope if _choose(j, options, protected)[0] is not None]
    to_measure = [j for j in candidates if measure or _stale(j)]
    for i, job in enumerate(to_measure):
        if progress and (i % 200 == 0):
            progress(f"measuring {job.uid} ({i + 1}/{len(to_measure)})")
        record_job_size(inst.store, project_uid, job.uid)
    if to_measure:
        project, every, scope = _snapshot(inst, project_uid, workspace)
        protected = protectors(every)
    notices = []
    if project.size_measured_at is None:
        notices.append(f"the project's size was never measured: run 'cryohpc project refresh-size {project_uid}' "
                       "for the size on disk of files outside job directories")
    elif time.time() - project.size_measured_at > STALE_PROJECT_S:
        hours = (time.time() - project.size_measured_at) / 3600
        notices.append(f"the project's size was measured {hours:.0f} h ago; 'cryohpc project refresh-size "
                       f"{project_uid}' measures it again")
    touched = {j.uid for j in candidates}
    stale = [j.uid for j in scope if _stale(j) and j.uid not in touched]
    if stale:
        notices.append(f"{len(stale)} job(s) not touched by this cleanup have sizes older than their last run "
                       f"(e.g. {', '.join(stale[:5])}); the tables show their last measured sizes")
    jobs_bytes = sum(j.job_dir_size for j in every)
    project_bytes = jobs_bytes + (project.size_other or 0)
    by_uid = {j.uid: j for j in scope}
    order = list(reversed(topological(scope)))  # children before parents: a cleared child frees its parent
    decisions = []
    releasing: set[str] = set()
    with inst.store.read() as tx:
        for uid in order:
            d = _decide(tx, by_uid[uid], options, protected, releasing)
            if d.action in (CLEAR, DELETE):
                releasing.add(uid)
            decisions.append(d)
    scope_bytes = sum(j.job_dir_size for j in scope)
    return CleanupPreview(project_uid, workspace, options, project_bytes, len(every), scope_bytes,
                          project.size_measured_at, notices, decisions, _tabs(scope, protected))


def run(inst: Instance, plan: CleanupPreview, progress: Callable[[Decision], None] | None = None) -> CleanupPreview:
    """Carry out a preview's decisions, children before parents, each in its own
    transaction and journaled as operation 'cleanup'. A job whose state changed since the
    preview is skipped and said (never something else done to it instead)."""
    if not plan.to_do:
        return plan
    ctx = ActionContext(inst)
    do = {DELETE: delete_job, CLEAR: clear_job, TRIM: clear_intermediate}
    with inst.store.write() as tx:
        op = tx.start_operation(plan.project_uid, "cleanup", str(asdict(plan.options)), owner(), os.getpid(),
                                len(plan.to_do))
    for d in plan.to_do:
        try:
            do[d.action](inst, plan.project_uid, d.job_uid, ctx=ctx,
                         journal=lambda tx, uid=d.job_uid: tx.record_outcome(op, uid, "done"))
            d.outcome = "done"
            if d.action in (CLEAR, DELETE):
                ctx.releasing.add(d.job_uid)
        except UserError as err:
            d.outcome, d.detail = "skipped", f"changed since the preview: {err}"
            with inst.store.write() as tx:
                tx.record_outcome(op, d.job_uid, "skipped", d.detail)
        if progress:
            progress(d)
    with inst.store.write() as tx:
        tx.finish_operation(op)
        project = tx.get_project(plan.project_uid)
        if project.size_jobs is not None:  # the recorded total follows what was freed
            freed = sum(d.bytes for d in plan.to_do if d.outcome == "done")
            project.size_jobs = max(0, project.size_jobs - freed)
            tx.put_project(project)
    return plan


def check_options(options: CleanupOptions) -> None:
    """Raises UserError for choices that contradict each other."""
    for what in ("non_final", "killed", "failed"):
        if getattr(options, f"clear_{what}") and getattr(options, f"delete_{what}"):
            raise UserError(f"choose either clear-{what.replace('_', '-')} or delete-{what.replace('_', '-')} "
                            "(delete clears first)")
    if options.include_extraction and not options.clear_preprocessing:
        raise UserError("include-extraction goes with clear-preprocessing")
