"""The Python API: ``Instance`` -> ``ProjectHandle`` -> ``JobHandle``, in the manner of
cryosparc-tools. The CLI is a thin layer over this module.

Handles hold uids, not state: every property reads the database afresh.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import actions, builder, cleanup
from .actions.batch import Plan, make_plan, run_plan
from .actions.common import owner as _owner
from .cleanup import CleanupOptions, CleanupPreview
from .dataset import Dataset
from .disk_usage import ProjectUsage, refresh_project_size
from .errors import BuildError, ConfigError, NotFoundError, UserError
from .events import FAILED, WorkerEvent, format_event, read_events
from .instance import Instance
from .jobtypes import JobTypeSpec, all_jobtypes, get_jobtype, jobtype_problems
from .lanes import Lane
from .lanes.siteconfig import WorkerTarget
from .model import Job, Project, Resources, SlotRef, Workspace
from .project_lifecycle import refuse_overlap, write_marker
from .selections import Selection
from .status import JobStatus
from .text import one_line
from .usage import KEYS as usage_keys

__all__ = ["ACTION_NAMES", "Api", "CleanupOptions", "CleanupPreview", "JobHandle", "JobStatus", "Plan", "ProjectHandle", "Selection"]

ACTION_NAMES = tuple(actions.ACTIONS)


class Api:
    """Entry point: ``Api(home)`` opens an instance (``Api.init`` creates one)."""

    def __init__(self, home: str | os.PathLike | None = None):
        self.instance = Instance(home)

    @classmethod
    def init(cls, home: str | os.PathLike | None = None, projects_root: str | os.PathLike | None = None,
             **settings: Any) -> Api:
        Instance.create(home, Path(projects_root) if projects_root else None, **settings)
        return cls(home)

    @property
    def store(self):
        return self.instance.store

    # -- projects ---------------------------------------------------------------------
    def create_project(self, title: str, project_dir: str | os.PathLike | None = None,
                       description: str = "") -> ProjectHandle:
        """Create a project; its directory must be new or empty.

        Raises:
            UserError: the directory holds files (another project's, most likely).
        """
        one_line(title, "a project title")
        with self.store.write() as tx:
            uid = f"P{tx.next_number('project')}"
            path = Path(project_dir) if project_dir else Path(self.instance.config.projects_root) / uid
            path = Path(one_line(str(path), "a project directory")).expanduser().resolve()
            one_line(str(path), "a project directory")  # as resolved (a link may name another)
            refuse_overlap(tx, path)
            if path.exists() and any(path.iterdir()):
                raise UserError(f"project directory {path} is not empty; choose a new or empty directory")
            project = Project(uid=uid, title=title, description=description, project_dir=str(path), owner=_owner())
            path.mkdir(parents=True, exist_ok=True)
            write_marker(path, self.instance, uid)
            tx.put_project(project)
        return ProjectHandle(self, uid)

    def find_project(self, uid: str) -> ProjectHandle:
        with self.store.read() as tx:
            tx.get_project(uid)
        return ProjectHandle(self, uid)

    def current_jobs(self, lane: str | None = None, queued: bool = True, active: bool = True) -> list[Job]:
        """Jobs in progress across every project (CryoSPARC's Current Jobs view): queued
        ones and launched ones, in launch order per lane."""
        wanted = ([JobStatus.QUEUED] if queued else []) + (
            [JobStatus.LAUNCHED, JobStatus.STARTED, JobStatus.RUNNING, JobStatus.WAITING] if active else [])
        if not wanted:
            return []
        with self.store.read() as tx:
            jobs = tx.list_jobs(statuses=wanted, lane=lane)
        return sorted(jobs, key=lambda j: (j.queued_lane or "local", not j.status.active, -j.priority,
                                           j.status_times.get(j.status.value, 0.0)))

    def usage(self, project: str | None = None, user: str | None = None, lane: str | None = None,
              since: float | None = None, by: tuple[str, ...] = usage_keys) -> list[dict[str, Any]]:
        """CPU-hours, GPU-hours and job counts from every job's run history (deleted jobs'
        too), one row per combination of ``by`` (project, user, lane, type).

        Raises:
            UserError: an unknown grouping key.
        """
        from .usage import UsageFilter, summarize

        if project is not None:
            self.find_project(project)  # a missing project is an error, not an empty table
        with self.store.read() as tx:
            jobs = tx.list_jobs(include_deleted=True)
        try:
            return summarize(jobs, UsageFilter(project, user, lane, since), tuple(by))
        except ValueError as err:
            raise UserError(str(err)) from None

    def attach_project(self, project_dir: str | os.PathLike) -> ProjectHandle:
        """Bring a detached project (``ProjectHandle.detach``) into this instance, under a
        new project uid; jobs and workspaces keep theirs."""
        from .project_lifecycle import attach

        return ProjectHandle(self, attach(self.instance, str(project_dir)).uid)

    def compact_database(self) -> tuple[int, int]:
        """Give pages freed by deletions back to the disk; (bytes before, bytes after)."""
        return self.store.compact()

    def projects(self) -> list[Project]:
        with self.store.read() as tx:
            return tx.list_projects()

    def connect_worker(self, lane: str, host: str, *, new_lane: bool = False, update: bool = False,
                       **settings: Any) -> WorkerTarget:
        """Register an SSH worker target, as ``cryohpc worker connect`` does (settings are
        WorkerTarget fields: port, user, gpus, cache_path...)."""
        return self.connect_worker_reporting(lane, host, new_lane=new_lane, update=update, **settings)[0]

    def connect_worker_reporting(self, lane: str, host: str, *, new_lane: bool = False, update: bool = False,
                                 **settings: Any) -> tuple[WorkerTarget, dict | None]:
        """``connect_worker``, also returning what the target reported when probed."""
        from . import targets

        return targets.connect(self.instance, lane, host, new_lane=new_lane, update=update, **settings)

    def worker_state(self, lane: str, name: str) -> tuple[str, float | None, str]:
        """(state, since, detail) as the master last published it."""
        with self.store.read() as tx:
            return tx.worker_states().get((lane, name), ("unknown", None, ""))

    def jobs_on_worker(self, target: WorkerTarget) -> list[str]:
        from .targets import jobs_on

        return jobs_on(self.instance, target)

    def probe_worker(self, target: WorkerTarget) -> dict:
        """Connect now (host key checked) and return what the target reports."""
        from .targets import probe_target

        return probe_target(self.instance, target)

    def workers(self, lane: str | None = None) -> list[WorkerTarget]:
        from .targets import ssh_lanes

        return [w for name, cfg in ssh_lanes(self.instance).items() if lane in (None, name) for w in cfg.workers]

    def find_worker(self, name: str, lane: str | None = None) -> WorkerTarget:
        from .targets import find_target

        return find_target(self.instance, name, lane)

    def remove_worker(self, name: str, lane: str | None = None) -> WorkerTarget:
        from .targets import remove

        return remove(self.instance, name, lane)

    def jobtypes(self) -> list[JobTypeSpec]:
        return all_jobtypes()

    def validate_jobtypes(self, paths: list[Path] | None = None) -> tuple[list[JobTypeSpec], list[str]]:
        """Declared job types (the site's ``<home>/jobtypes/``, or the files given): the
        ones that load, and one message (file, line, problem) per one that does not."""
        from .jobtypes.declared import load_declaration

        if not paths:
            return [s for s in all_jobtypes() if s.declared_in], jobtype_problems()
        specs, problems = [], []
        for path in paths:
            try:
                specs.append(load_declaration(Path(path)))
            except ConfigError as err:
                problems.append(str(err))
        return specs, problems

    def jobtype(self, name: str) -> JobTypeSpec:
        return get_jobtype(name)

    @staticmethod
    def load_dataset(path: str | os.PathLike) -> Dataset:
        """A ``.cs`` file (either format); no instance is needed to look at one.

        Raises:
            DatasetError: missing, truncated or malformed file (named).
        """
        return Dataset.load(path)

    # -- lanes, their caches, the master ----------------------------------------------------
    def lanes(self) -> dict[str, Lane]:
        return self.instance.build_lanes()

    def lane_problems(self) -> list[str]:
        """Errors of the site configs at the last ``lanes()``: each disabled only its own lanes."""
        return list(self.instance.lane_problems)

    def lane(self, name: str) -> Lane:
        lanes = self.lanes()
        if name not in lanes:
            raise self.instance.no_lane(name, lanes)
        return lanes[name]

    def validate_site_configs(self, paths: list[Path] | None = None):
        """Load site configs (the instance's, or the files given, from any folder) and
        render every template and command for sample jobs; lint cluster lanes for what
        would fail at run time. Returns a ``lane_files.Checked``: lane names, the template
        each uses (absolute path), warnings naming file and line.

        Raises:
            ConfigError: the first problem, with file, line and key.
        """
        from .lane_files import Checked, check_file

        files = list(paths or []) or sorted(self.instance.paths.site_configs.glob("*.y*ml"))
        out = Checked([])
        for f in files:
            checked = check_file(self.instance, Path(f))
            out.names += checked.names
            out.warnings += checked.warnings
            out.templates.update(checked.templates)
        if not paths:  # the instance's own files: targets must also join their lanes
            self.instance.lane_configs()
        return out

    def add_lane_file(self, path: str | os.PathLike, replace: bool = False):
        """Check a site-config file and copy it (with templates beside it) into the
        instance: ``(installed path, Checked)``."""
        from . import lane_files

        return lane_files.add(self.instance, Path(path), replace=replace)

    def remove_lane(self, name: str) -> str:
        """Remove a lane's site config (refused while jobs are queued or running on it)."""
        from . import lane_files

        return lane_files.remove(self.instance, name)

    def dump_lane(self, name: str) -> tuple[dict[str, Any], str | None, str | None]:
        """A lane's settings (defaults left out), and a cluster lane's template text and file."""
        from . import lane_files

        return lane_files.dump(self.instance, name)

    def import_cryosparc(self, folder: str | os.PathLike, *, name: str | None = None, kind: str | None = None,
                         values: dict[str, Any] | None = None, types: dict[str, str] | None = None):
        """A CryoSPARC cluster folder converted and checked, not yet written:
        ``(lanes.cryosparc_pair.Ported, Checked)``; pass the first to ``install_ported``."""
        from . import lane_files

        return lane_files.port(self.instance, Path(folder), name=name, kind=kind, values=values, types=types)

    def install_ported(self, ported, dest: str | os.PathLike | None = None, replace: bool = False):
        from . import lane_files

        return lane_files.install(self.instance, ported, Path(dest) if dest else None, replace=replace)

    def export_cryosparc(self, name: str, dest: str | os.PathLike, replace: bool = False):
        """Write a cluster lane as CryoSPARC's pair: ``(info path, script path, warnings)``."""
        from . import lane_files

        return lane_files.export(self.instance, name, Path(dest), replace=replace)

    def test_lane(self, name: str, *, shapes: list[str] | None = None, variables: dict[str, str] | None = None,
                  submit: bool = False, folder: str | os.PathLike | None = None, timeout_s: float = 300.0,
                  keep: bool = False):
        """Try a cluster lane as jobs will use it: the info command, each resource shape
        rendered and test-submitted (``sbatch --test-only``), and with ``submit`` a real
        ``lane_probe`` job end to end (in ``folder``, default ``<projects_root>/.lane-tests``,
        which the nodes must see). Returns a ``lanes.trial.Report`` of timed steps.

        Raises:
            UserError: not a cluster lane, a bad shape, or a custom value the lane refuses.
        """
        from .lanes.cluster import ClusterLane
        from .lanes.trial import Report, parse_shape, submit_probe, try_shapes

        lane = self.lane(name)
        if not isinstance(lane, ClusterLane):
            raise UserError(f"lane {name!r} is a node lane: 'lane show' gives its capacity, 'worker test' "
                            "tries its SSH workers")
        parsed = [parse_shape(s) for s in shapes] if shapes else None
        custom = lane.custom_values({}, variables or {})
        report = try_shapes(lane, parsed, custom)
        if submit:
            where = Path(folder) if folder else Path(self.instance.config.projects_root) / ".lane-tests"
            shape = parsed[0] if parsed else Resources(cpus=2, gpus=0, ram_gb=1, mpi_ranks=2)
            probe = submit_probe(lane, self.instance.config.instance_uid, where, shape, custom, timeout_s, keep)
            report = Report(report.steps + probe.steps)
        return report

    def lane_cache(self, lane: str):
        """The SSD cache of a node lane, on this machine.

        Raises:
            UserError: the lane has no cache.
        """
        from .cache import SsdCache, resolve_cache_path

        settings = self.lane(lane).cache_settings()
        if not settings:
            raise UserError(f"lane {lane!r} has no SSD cache (cache_path)")
        return SsdCache(resolve_cache_path(settings["path"]), settings.get("quota_mb"), settings.get("reserve_mb", 0),
                        settings.get("lifetime_days", 30), settings.get("threads", 2))

    def lane_cache_use(self, lane: str, recent: int = 200) -> dict[str, dict[str, Any]]:
        """Per node, what the lane's last ``recent`` jobs recorded of its SSD cache (path as
        resolved there, bytes copied in, hits, evictions, the last job): what the master
        can know of caches on nodes it cannot look into (cluster lanes)."""
        self.lane(lane)
        with self.store.read() as tx:
            jobs = [j for j in tx.list_jobs(lane=lane) if j.run.cache_use]
        jobs.sort(key=lambda j: j.run.launched_at or 0)
        nodes: dict[str, dict[str, Any]] = {}
        for j in jobs[-recent:]:
            for host, use in j.run.cache_use.items():
                node = nodes.setdefault(host, {"jobs": 0, "copied_bytes": 0, "hits": 0, "evicted": 0})
                node["jobs"] += 1
                for key in ("copied_bytes", "hits", "evicted"):
                    node[key] += int(use.get(key, 0))
                node.update(path=use.get("path"), last_job=j.ref, last_at=use.get("at"))
        return nodes

    # -- keeping the instance whole ----------------------------------------------------
    def backup(self, dest: str | os.PathLike) -> Path:
        """A consistent copy of the database (safe while the master runs)."""
        from .maintenance import backup

        return backup(self.instance, Path(dest))

    def restore(self, source: str | os.PathLike) -> None:
        """Replace the database with a checked backup (no master may run)."""
        from .maintenance import restore

        restore(self.instance, Path(source))

    def doctor(self):
        """Database, site configs and job directories checked; what would be repaired."""
        from .maintenance import doctor

        return doctor(self.instance)

    def master_pid(self) -> int | None:
        from .master import master_pid

        return master_pid(self.instance)

    def start_master(self) -> int:
        from .master import start_master

        return start_master(self.instance)

    def stop_master(self) -> int | None:
        from .master import stop_master

        return stop_master(self.instance)

    def run_master(self) -> None:
        """The master in the foreground until SIGTERM/SIGINT."""
        from .master import run_master

        run_master(self.instance)


class ProjectHandle:
    def __init__(self, api: Api, uid: str):
        self.api, self.uid = api, uid

    @property
    def model(self) -> Project:
        with self.api.store.read() as tx:
            return tx.get_project(self.uid)

    @property
    def dir(self) -> Path:
        return Path(self.model.project_dir)

    def create_workspace(self, title: str, description: str = "") -> Workspace:
        with self.api.store.write() as tx:
            tx.get_project(self.uid)
            ws = Workspace(uid=f"W{tx.next_number(f'{self.uid}/workspace')}", project_uid=self.uid,
                           title=title, description=description)
            tx.put_workspace(ws)
        return ws

    def set_default_params(self, **values: Any) -> Project:
        """Project-wide param defaults (e.g. ``compute_use_ssd=False``); a job's own value
        wins, None removes a default. Checked against every job type that has the param.

        Raises:
            BuildError: no job type has the param, or a value does not fit it.
        """
        from .jobtypes import all_jobtypes

        checked = {}
        for name, value in values.items():
            if value is None:
                checked[name] = None
                continue
            specs = [p for t in all_jobtypes() for p in t.params if p.name == name]
            if not specs:
                raise BuildError(f"no job type has a param {name!r}")
            checked[name] = specs[0].coerce(value, "project default")
        with self.api.store.write() as tx:
            project = tx.get_project(self.uid)
            merged = {**project.default_params, **checked}
            project.default_params = {k: v for k, v in merged.items() if v is not None}
            tx.put_project(project)
            return project

    def set_cluster_vars(self, **values: Any) -> Project:
        """Project-level values of cluster lanes' custom variables (None removes one); each
        is checked against its declared type when a job is queued, and is one line now.

        Raises:
            UserError: a name that is not an identifier, or a value that is not one line.
        """
        for name, value in values.items():
            if not name.isidentifier():
                raise UserError(f"custom variable name {name!r} is not an identifier")
            if isinstance(value, str):
                one_line(value, f"custom variable {name!r}")
        with self.api.store.write() as tx:
            project = tx.get_project(self.uid)
            merged = {**project.cluster_custom_vars, **values}
            project.cluster_custom_vars = {k: v for k, v in merged.items() if v is not None}
            tx.put_project(project)
            return project

    def workspaces(self) -> list[Workspace]:
        with self.api.store.read() as tx:
            tx.get_project(self.uid)
            return tx.list_workspaces(self.uid)

    def create_job(self, type: str, workspace: str | None = None, title: str = "",
                   params: dict[str, Any] | None = None) -> JobHandle:
        with self.api.store.write() as tx:
            job = builder.create_job(tx, self.uid, type, workspace, title, params, created_by=_owner())
        return JobHandle(self.api, self.uid, job.uid)

    def find_job(self, uid: str) -> JobHandle:
        with self.api.store.read() as tx:
            tx.get_job(self.uid, uid)
        return JobHandle(self.api, self.uid, uid)

    def jobs(self, statuses: list[JobStatus] | None = None, *, lane: str | None = None,
             workspace: str | None = None, tag: str | None = None, type: str | None = None) -> list[Job]:
        """The project's jobs, filtered by status, lane, workspace, tag and type."""
        with self.api.store.read() as tx:
            tx.get_project(self.uid)
            if workspace is not None:
                tx.get_workspace(self.uid, workspace)
            jobs = tx.list_jobs(self.uid, statuses=statuses, lane=lane)
        return [j for j in jobs if (workspace is None or workspace in j.workspace_uids)
                and (tag is None or tag in j.tags) and (type is None or j.type == type)]

    def job_uids(self, workspace: str | None = None) -> list[str]:
        """The project's (or a workspace's) job list, deleted jobs left out."""
        with self.api.store.read() as tx:
            tx.get_project(self.uid)
            if workspace is not None:
                tx.get_workspace(self.uid, workspace)
            return tx.workspace_job_uids(self.uid, workspace)

    def select(self, selection: Selection | None = None, **criteria: Any) -> list[Job]:
        """The jobs a selection names (``Selection`` fields as keywords also work)."""
        from .selections import select

        with self.api.store.read() as tx:
            return select(tx, self.uid, selection or Selection(**criteria))[0]

    def plan(self, action: str, selection: Selection | None = None, /, **args: Any) -> Plan:
        """What ``action`` (one of ``ACTION_NAMES``) would do to each selected job, nothing
        changed. ``args`` are the action's own (lane=..., workspace=..., add=[...])."""
        return make_plan(self.api.instance, self.uid, action, selection or Selection(), **args)

    def run_plan(self, plan: Plan) -> Plan:
        """Carry out a plan (each job in its own transaction, journaled); outcomes filled in."""
        if plan.project_uid != self.uid:
            raise UserError(f"that plan is for project {plan.project_uid}, not {self.uid}")
        return run_plan(self.api.instance, plan)

    def operations(self, limit: int = 20) -> list[dict]:
        """The latest multi-job operations, newest first, with each job's outcome."""
        with self.api.store.read() as tx:
            tx.get_project(self.uid)
            return tx.operations(self.uid, limit)

    def clone_chain(self, first: str, last: str, workspace: str | None = None,
                    new_workspace: str | None = None) -> list[JobHandle]:
        """Clone every job on the paths between two jobs, re-wired to each other's clones."""
        clones = actions.clone_chain(self.api.instance, self.uid, first, last, workspace, new_workspace)
        return [JobHandle(self.api, self.uid, c.uid) for c in clones]

    # -- sizes, cleanup and the project's life ------------------------------------------
    def refresh_size(self, progress: Callable[[str, int, int], None] | None = None) -> ProjectUsage:
        """Measure every job directory and the other files of the project (no database
        lock held while measuring); ``progress(what, files, bytes)`` about once a second."""
        self._refuse_if_archived("measured")
        return refresh_project_size(self.api.store, self.uid, progress)

    def cleanup_preview(self, options: CleanupOptions | None = None, workspace: str | None = None,
                        measure: bool = False, progress: Callable[[str], None] | None = None,
                        **choices: bool) -> CleanupPreview:
        """What the cleanup tool would do (``CleanupOptions`` fields as keywords also work),
        with the bytes it frees; nothing is changed but stale sizes, which are measured."""
        options = options or CleanupOptions(**choices)
        cleanup.check_options(options)
        self._refuse_if_archived("cleaned up")
        return cleanup.preview(self.api.instance, self.uid, options, workspace, measure, progress)

    def cleanup(self, preview: CleanupPreview, progress: Callable | None = None) -> CleanupPreview:
        """Carry out exactly what a preview said (jobs changed since are skipped, and said)."""
        if preview.project_uid != self.uid:
            raise UserError(f"that preview is for project {preview.project_uid}, not {self.uid}")
        return cleanup.run(self.api.instance, preview, progress)

    def _refuse_if_archived(self, doing: str) -> None:
        with self.api.store.read() as tx:
            if tx.get_project(self.uid).archived:
                raise UserError(f"project {self.uid} is archived (read-only); unarchive it before it is {doing}")

    def set_intermediate_on_complete(self, on: bool) -> Project:
        """Whether jobs of this project clear their intermediate results when they complete."""
        with self.api.store.write() as tx:
            project = tx.get_project(self.uid)
            project.delete_intermediate_on_complete = on
            tx.put_project(project)
            return project

    def archive(self) -> Project:
        from .project_lifecycle import archive

        return archive(self.api.instance, self.uid)

    def unarchive(self, new_dir: str | os.PathLike | None = None) -> Project:
        from .project_lifecycle import unarchive

        return unarchive(self.api.instance, self.uid, None if new_dir is None else str(new_dir))

    def detach(self) -> Path:
        """Write the project's records into its directory and remove it from the instance."""
        from .project_lifecycle import detach

        return detach(self.api.instance, self.uid)

    def import_job(self, export_dir: str | os.PathLike, workspace: str | None = None) -> JobHandle:
        """Import an exported job (``JobHandle.export``) as a new completed job."""
        job = actions.import_job(self.api.instance, self.uid, export_dir, workspace)
        return JobHandle(self.api, self.uid, job.uid)


class JobHandle:
    def __init__(self, api: Api, project_uid: str, uid: str):
        self.api, self.project_uid, self.uid = api, project_uid, uid

    def __repr__(self) -> str:
        return f"JobHandle({self.project_uid} {self.uid})"

    @property
    def model(self) -> Job:
        with self.api.store.read() as tx:
            return tx.get_job(self.project_uid, self.uid)

    @property
    def status(self) -> JobStatus:
        return self.model.status

    @property
    def dir(self) -> Path:
        with self.api.store.read() as tx:
            project = tx.get_project(self.project_uid)
            return builder.job_dir_abs(project, tx.get_job(self.project_uid, self.uid))

    # -- building ---------------------------------------------------------------------
    def connect(self, input_name: str, source_job: str, source_group: str) -> Job:
        with self.api.store.write() as tx:
            return builder.connect(tx, self.project_uid, self.uid, input_name, source_job, source_group)

    def disconnect(self, input_name: str, index: int | None = None) -> Job:
        with self.api.store.write() as tx:
            return builder.disconnect(tx, self.project_uid, self.uid, input_name, index)

    def connect_slot(self, input_name: str, slot: str, source_job: str, source_group: str,
                     source_result: str, index: int = 0, version: int = -1) -> Job:
        ref = SlotRef(job_uid=source_job, group_name=source_group, result_name=source_result, version=version)
        with self.api.store.write() as tx:
            return builder.override_slot(tx, self.project_uid, self.uid, input_name, index, slot, ref)

    def set_params(self, **params: Any) -> Job:
        with self.api.store.write() as tx:
            return builder.set_params(tx, self.project_uid, self.uid, params)

    # -- actions ----------------------------------------------------------------------
    def queue(self, lane: str | None = None, priority: int | None = None, gpus: list[int] | None = None,
              custom_vars: dict[str, Any] | None = None, target: str | None = None) -> Job:
        return actions.queue_job(self.api.instance, self.project_uid, self.uid, lane, priority, gpus, custom_vars,
                                 target)

    def kill(self) -> Job:
        return actions.kill_job(self.api.instance, self.project_uid, self.uid)

    def restart(self, lane: str | None = None) -> Job:
        """CryoSPARC's restart: killed if running, cleared, queued again as before."""
        return actions.restart_job(self.api.instance, self.project_uid, self.uid, lane)

    def resume(self, lane: str | None = None) -> Job:
        """Queue a killed or failed job again keeping its files: it continues from its checkpoints."""
        return actions.resume_job(self.api.instance, self.project_uid, self.uid, lane)

    def clear(self) -> Job:
        return actions.clear_job(self.api.instance, self.project_uid, self.uid)

    def clear_intermediate(self) -> Job:
        return actions.clear_intermediate(self.api.instance, self.project_uid, self.uid)

    def mark_final(self) -> Job:
        return actions.mark_final(self.api.instance, self.project_uid, self.uid)

    def unmark_final(self) -> Job:
        return actions.unmark_final(self.api.instance, self.project_uid, self.uid)

    def queue_with_ancestors(self, lane: str | None = None, priority: int | None = None,
                             gpus: list[int] | None = None, custom_vars: dict | None = None,
                             target: str | None = None) -> list[Job]:
        """Queue the job's cleared (building) ancestors in order, then the job."""
        from .actions.queueing import queue_with_ancestors

        return queue_with_ancestors(self.api.instance, self.project_uid, self.uid, lane, priority, gpus,
                                    custom_vars, target)

    def cleared_ancestors(self) -> list[str]:
        """Building ancestors (cleared, or never run) the job needs before it can run."""
        from .actions.queueing import ancestors_to_rerun

        with self.api.store.read() as tx:
            job = tx.get_job(self.project_uid, self.uid)
            try:
                return [j.uid for j in ancestors_to_rerun(tx, job)]
            except UserError:
                return []

    def set_intermediate_on_complete(self, on: bool | None) -> Job:
        """This job's own choice (None: the project's) of clearing intermediate results
        when it completes."""
        with self.api.store.write() as tx:
            job = tx.get_job(self.project_uid, self.uid)
            job.delete_intermediate_on_complete = on
            tx.put_job(job)
            return job

    def mark_complete(self) -> Job:
        return actions.mark_complete(self.api.instance, self.project_uid, self.uid)

    def clone(self, workspace: str | None = None) -> JobHandle:
        job = actions.clone_job(self.api.instance, self.project_uid, self.uid, workspace)
        return JobHandle(self.api, self.project_uid, job.uid)

    def link(self, workspace: str) -> Job:
        return actions.link_job(self.api.instance, self.project_uid, self.uid, workspace)

    def unlink(self, workspace: str) -> Job:
        return actions.unlink_job(self.api.instance, self.project_uid, self.uid, workspace)

    def move(self, workspace: str, from_workspace: str | None = None) -> Job:
        return actions.move_job(self.api.instance, self.project_uid, self.uid, workspace, from_workspace)

    def delete(self) -> Job:
        return actions.delete_job(self.api.instance, self.project_uid, self.uid)

    def export(self, dest: str | os.PathLike | None = None) -> Path:
        """Write a self-contained export folder (default: the project's exports/jobs/)."""
        return actions.export_job(self.api.instance, self.project_uid, self.uid, dest)

    def tag(self, add: list[str] = (), remove: list[str] = ()) -> Job:
        return actions.tag_job(self.api.instance, self.project_uid, self.uid, list(add), list(remove))

    def set_description(self, text: str) -> Job:
        return actions.describe_job(self.api.instance, self.project_uid, self.uid, text)

    def deleted_parents(self) -> list[str]:
        """Parents this job took inputs from that have since been deleted."""
        job = self.model
        with self.api.store.read() as tx:
            return [p for p in job.parents if tx.get_job(self.project_uid, p, include_deleted=True).deleted]

    def wait(self, timeout_s: float | None = None, poll_s: float = 0.25) -> JobStatus:
        """Block until the job is completed, killed or failed; returns that status.

        Raises:
            TimeoutError: still not final after ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status = self.status
            if status.final:
                return status
            if status == JobStatus.BUILDING:
                raise UserError(f"{self.project_uid} {self.uid} is building; queue it before waiting")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.project_uid} {self.uid} still {status.value} after {timeout_s} s")
            time.sleep(poll_s)

    # -- results ----------------------------------------------------------------------
    def events(self) -> list[WorkerEvent]:
        """The worker's events of the latest run, typed (``events.WorkerEvent``)."""
        return read_events(self.dir)[0]

    def log_lines(self, follow: bool = False, poll_s: float = 0.5) -> Iterator[str]:
        """The event log for people; with ``follow`` keeps reading until the job is final."""
        offset = 0
        job_dir = self.dir
        while True:
            final = self.status.final  # read before the events, so none are missed at the end
            events, offset = read_events(job_dir, offset)
            for ev in events:
                line = format_event(ev)
                if line is not None:
                    yield line
            if not follow or final:
                if not events and self.status.final:
                    last = self.model.errors_run
                    if last and not any(e.type == FAILED for e in self.events()):
                        yield f"FAILED: {last[-1].message}"
                return
            time.sleep(poll_s)

    def output_path(self, group: str, result: str | None = None, version: int = -1) -> Path:
        """Absolute path of an output result's ``.cs`` file (the group's first result by default)."""
        job = self.model
        g = job.output(group)
        if g is None:
            raise NotFoundError(f"{job.ref} has no output {group!r} (outputs: {', '.join(o.name for o in job.outputs)})")
        res = g.result(result) if result else next((r for r in g.results if r.metafiles), None)
        if res is None or not res.metafiles:
            raise BuildError(f"{job.ref}: output {group!r} has no results yet (job is {job.status.value})")
        with self.api.store.read() as tx:
            root = Path(tx.get_project(self.project_uid).project_dir)
        return root / res.metafiles[version]

    def load_output(self, group: str) -> Dataset:
        """The output group's items with all its results joined (passthroughs included)."""
        job = self.model
        g = job.output(group)
        if g is None or not any(r.metafiles for r in g.results):
            raise BuildError(f"{job.ref}: output {group!r} has no results yet (job is {job.status.value})")
        with self.api.store.read() as tx:
            root = Path(tx.get_project(self.project_uid).project_dir)
        files = list(dict.fromkeys(root / r.metafiles[-1] for r in g.results if r.metafiles))
        return Dataset.innerjoin_many([Dataset.load(f) for f in files])
