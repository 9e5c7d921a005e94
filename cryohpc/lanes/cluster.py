"""Cluster lanes: jobs go to SLURM, PBS or SGE as rendered submission scripts.

One status query per lane per poll covers all its jobs, and names them: the scheduler is
asked about cryohpc's job ids only. A job the scheduler no longer lists is not assumed
finished: the history command (SLURM: sacct), the worker's events and the exit-code
sentinel written by the script decide, and a query that fails concludes nothing. A
submit whose answer was lost is looked for by its tag before any second submit, and a
look-up that fails is "unknown": the job waits, it is not submitted again.
"""

from __future__ import annotations

import math
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import BuildError
from ..exitcode import EXIT_CODE_NAME, STOP_REQUEST_NAME, read_exit_code
from ..model import Resources
from .base import (
    BatchLane,
    Launched,
    LaunchRequest,
    PollResult,
    RunHandle,
    RunState,
    job_tag,
    tag_prefix,
)
from .errors import LaneUnreachable, LaunchRefused, LaunchUnconfirmed
from .local import default_mpiexec
from .render import TEMPLATE_DIR, Raw, environment, render, shell_join
from .runner import CommandError, CommandRunner
from .schedulers import KINDS, Phase, SchedulerStatus, parse_sacct_usage, strip_server
from .siteconfig import ClusterLaneConfig

SCRIPT_NAME = "submit.sh"
CANCEL_CONFIRM_S = 60.0
IDS_PER_QUERY = 1000  # a status query names at most this many ids (command lines stay short)
# resource shapes every template must render for when a lane is loaded
SAMPLE_SHAPES = (Resources(cpus=1, gpus=0, ram_gb=2, mpi_ranks=1), Resources(cpus=8, gpus=4, ram_gb=64, mpi_ranks=4))


def sample_request(job_dir: Path, project_dir: Path, resources: Resources, instance_uid: str,
                   custom: dict[str, Any] | None = None, creator: str = "validator") -> LaunchRequest:
    """A request for a made-up job, to render a lane's templates before any real job."""
    return LaunchRequest(project_uid="P0", job_uid="J0", job_type="homo_reconstruct", job_title="",
                         job_creator=creator, job_dir=job_dir, project_dir=project_dir, command=[], env={},
                         resources=resources, tag=job_tag(instance_uid, "P0", "J0"), custom=custom or {})


def _id_variables(ids: list[str], names: list[str]) -> dict[str, Any]:
    """What status and history templates get: the runs' ids (comma-joined, or a word each)
    and their tags (comma-joined: SLURM's ``--name`` list)."""
    return {"job_ids": ",".join(ids), "job_id_args": Raw(shlex.join(ids)), "job_names": ",".join(names)}


class ClusterLane(BatchLane):

    def __init__(self, cfg: ClusterLaneConfig, instance_uid: str = "dev", template_dirs: list[Path] | None = None):
        self.cfg, self.name, self.instance_uid = cfg, cfg.name, instance_uid
        self.poll_interval_s = cfg.poll_interval_s
        self.requeue_on, self.max_requeues = frozenset(cfg.requeue_on), cfg.max_requeues
        self.kind = KINDS[cfg.kind]
        dirs = [Path(cfg.source).parent] if cfg.source else []  # beside the config (as the import writes it)
        dirs += list(template_dirs or [])
        if cfg.source:
            dirs.append(Path(cfg.source).parent.parent / "templates")
        dirs.append(TEMPLATE_DIR)
        template = Path(cfg.script_template)
        if template.is_absolute():
            dirs.insert(0, template.parent)
        self.template_name = template.name
        self.env = environment(dirs)
        self.runner = CommandRunner(self.env, cfg.name, cfg.send_cmd, cfg.command_timeout_s, cfg.env)
        self.commands = {
            "submit": cfg.submit_cmd or self.kind.submit, "status": cfg.status_cmd or self.kind.status,
            "cancel": cfg.cancel_cmd or self.kind.cancel, "info": cfg.info_cmd or self.kind.info,
            "find": cfg.find_cmd or self.kind.find,
        }
        history = cfg.history_cmd if cfg.history_cmd is not None else self.kind.history
        if history:
            self.commands["history"] = history
        accounting = cfg.accounting_cmd if cfg.accounting_cmd is not None else self.kind.accounting
        if accounting:
            self.commands["accounting"] = accounting
        self._missing_ids = re.compile(self.kind.missing_ids)
        self.validate()

    # -- variables ----------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"lane {self.name}" + (f" ({self.cfg.source})" if self.cfg.source else "")

    def custom_values(self, project_values: dict[str, Any], job_values: dict[str, Any]) -> dict[str, Any]:
        """Declared variables resolved: default < lane < project < job, each checked.

        Raises:
            BuildError: an undeclared variable, a value of the wrong type, a required one unset.
        """
        out: dict[str, Any] = {}
        declared = {v.name: v for v in self.cfg.custom_vars}
        for level, values in (("project", project_values), ("job", job_values)):
            unknown = set(values) - set(declared)
            if unknown:
                raise BuildError(f"{self.where}: {level} sets unknown custom variable(s) {', '.join(sorted(unknown))} "
                                 f"(declared: {', '.join(declared) or 'none'})")
        for name, var in declared.items():
            value = var.default
            for level, values in (("lane", self.cfg.custom_values), ("project", project_values), ("job", job_values)):
                if name in values:
                    try:
                        value = var.coerce(values[name], level)
                    except ValueError as err:
                        raise BuildError(f"{self.where}: {err}") from None
            if value is None and var.required:
                raise BuildError(f"{self.where}: custom variable {name!r} is required ({var.help or 'no help given'})")
            out[name] = value
        return out

    def worker_command(self, job_dir: Path, ranks: int, target: str = "") -> list[str]:
        worker = shlex.split(self.cfg.worker.bin_path) if self.cfg.worker.bin_path else [
            sys.executable, "-m", "cryohpc.worker.main"]
        return [*worker, "--job-dir", str(job_dir)]

    def program_launcher(self, target: str = "") -> list[str] | None:
        return shlex.split(self.cfg.mpi_launcher) if self.cfg.mpi_launcher else None

    def _launcher(self, ranks: int) -> list[str]:
        if ranks <= 1:
            return []
        if self.cfg.mpi_launcher:
            return [*shlex.split(self.cfg.mpi_launcher), "-n", str(ranks)]
        return [default_mpiexec() or "mpiexec", "-n", str(ranks)]

    def variables(self, req: LaunchRequest) -> dict[str, Any]:
        ranks = 1 if req.self_launched else req.resources.mpi_ranks  # a declared program starts its own
        worker = self.worker_command(req.job_dir, ranks)
        launcher = self._launcher(ranks)
        w, res = self.cfg.worker, req.resources
        nodes = res.nodes
        return {
            **req.custom,
            "script_path_abs": str(req.job_dir / SCRIPT_NAME),
            "run_cmd": shell_join([*launcher, *worker]),
            "run_args": shell_join(worker[1:]),
            "worker_bin_path": worker[0],
            "num_cpu": res.cpus, "num_gpu": res.gpus, "ram_gb": int(math.ceil(res.ram_gb)),
            "num_nodes": nodes, "num_mpi_ranks": res.mpi_ranks, "mpi_launcher": Raw(shlex.join(launcher)),
            # per node, for directives that count per node (--mem, --gres, ppn): the job's share divided evenly
            "num_ranks_per_node": max(res.mpi_ranks // nodes, 1), "num_cpu_per_node": max(res.cpus // nodes, 1),
            "num_gpu_per_node": res.gpus // nodes, "ram_gb_per_node": int(math.ceil(res.ram_gb / nodes)),
            "stop_warning_s": self.cfg.stop_warning_s, "stop_request_path": str(req.job_dir / STOP_REQUEST_NAME),
            "job_dir_abs": str(req.job_dir), "project_dir_abs": str(req.project_dir),
            "job_log_path_abs": str(req.job_dir / "job.log"), "exit_code_path": str(req.job_dir / EXIT_CODE_NAME),
            "project_uid": req.project_uid, "job_uid": req.job_uid, "job_type": req.job_type,
            "job_creator": req.job_creator or "unknown", "job_title": req.job_title,
            "job_name": req.tag, "job_name_prefix": tag_prefix(self.instance_uid), "instance_uid": self.instance_uid,
            "cache_path": Raw(w.cache_path or ""), "cache_quota_mb": w.cache_quota_mb or 0,
            "cache_reserve_mb": w.cache_reserve_mb, "lane_name": self.name,
        }

    def template_source(self) -> tuple[str, str]:
        """The script template's text and its file (absolute), as the loader finds them."""
        text, filename, _ = self.env.loader.get_source(self.env, self.template_name)
        return text, str(Path(filename or self.template_name).resolve())

    def template_file(self) -> str:
        return self.template_source()[1]

    def _command(self, purpose: str, variables: dict[str, Any]) -> str:
        return render(self.env, f"{self.where} {purpose}_cmd", variables, source=self.commands[purpose])

    def render_script(self, variables: dict[str, Any]) -> str:
        return render(self.env, f"{self.where} template {self.template_name}", variables, name=self.template_name)

    def sample_custom(self) -> dict[str, Any]:
        """Custom values for a made-up job: the lane's, else the defaults, else a sample
        of each variable's type."""
        custom = {v.name: v.default if v.default is not None else {"int": 1, "float": 1.0, "bool": True,
                                                                    "enum": (v.choices or [""])[0]}.get(v.type, "x")
                  for v in self.cfg.custom_vars}
        custom.update(self.cfg.custom_values)
        return custom

    def validate(self) -> None:
        """Render the script and every command for sample jobs of each resource shape.

        Raises:
            ConfigError: naming the lane, the file or key, the line and the problem.
        """
        custom = self.sample_custom()
        for shape in SAMPLE_SHAPES:
            req = sample_request(Path("/sample/P0/J0"), Path("/sample/P0"), shape, self.instance_uid, custom)
            variables = self.variables(req)
            self.render_script(variables)
            for purpose in self.commands:
                self._command(purpose, {**variables, "cluster_job_id": "12345", **_id_variables(["12345", "12346"], [req.tag, req.tag])})
        if isinstance(self.cfg.send_cmd, str):
            render(self.env, f"{self.where} send_cmd", {"command": "squeue"}, source=self.cfg.send_cmd)

    # -- Lane interface -----------------------------------------------------------------
    def cache_settings(self, target: str = "") -> dict | None:
        return self.cfg.worker.cache_settings()

    def prepare(self, req: LaunchRequest) -> tuple[str, dict]:
        variables = self.variables(req)
        return self.render_script(variables), variables

    def launch(self, request: LaunchRequest) -> Launched:
        script, variables = self.prepare(request)
        (request.job_dir / EXIT_CODE_NAME).unlink(missing_ok=True)
        path = request.job_dir / SCRIPT_NAME
        path.write_text(script)
        path.chmod(0o755)
        command = self._command("submit", variables)
        try:
            out = self.runner.run("submit", command, cwd=request.job_dir)
        except CommandError as err:
            if err.unsent:
                raise LaneUnreachable(f"not submitted: {err}") from err
            if err.timed_out:
                raise LaunchUnconfirmed(f"submission not confirmed: {err}") from err
            raise LaunchRefused(f"submission failed: {err}") from err
        try:
            job_id = self.kind.parse_submit(out)
        except ValueError as err:  # it answered, but not as expected: it may have submitted
            raise LaunchUnconfirmed(f"submission not confirmed: {err}, from the submit command {command}") from err
        return Launched(cluster_job_id=job_id, script=script)

    def find(self, request: LaunchRequest) -> Launched | None:
        """The live scheduler job carrying the request's tag, or None when the scheduler
        says there is none; a look-up that fails raises ``LaneUnreachable``."""
        try:
            out = self._ask("find", {"job_name": request.tag})
        except CommandError as err:
            raise LaneUnreachable(f"could not tell whether an earlier submission went through, "
                                  f"will ask again: {err}") from err
        ids = self.kind.parse_find(out)
        if not ids:
            return None
        script = (request.job_dir / SCRIPT_NAME).read_text() if (request.job_dir / SCRIPT_NAME).exists() else None
        return Launched(cluster_job_id=ids[0], script=script, adopted=True)

    def _ask(self, purpose: str, variables: dict[str, Any]) -> str:
        """Run a query; a failure whose only complaint is "no such job" is an answer.

        Raises:
            CommandError: the scheduler did not answer.
        """
        try:
            return self.runner.run(purpose, self._command(purpose, variables))
        except CommandError as err:
            complaints = [line for line in err.stderr.splitlines() if line.strip()]
            if err.returncode and complaints and all(self._missing_ids.search(line) for line in complaints):
                return err.stdout
            raise

    def query(self, runs: list[RunHandle], purpose: str = "status") -> dict[str, SchedulerStatus]:
        """What the scheduler says of these runs, in one command per thousand runs; rows of
        jobs that are not among them (another job under a cryohpc name) are dropped.

        Raises:
            CommandError: the scheduler did not answer.
        """
        wanted = {strip_server(r.cluster_job_id): r for r in runs if r.cluster_job_id}
        ids = sorted(wanted)
        listed: dict[str, SchedulerStatus] = {}
        for i in range(0, len(ids), IDS_PER_QUERY):
            part = ids[i:i + IDS_PER_QUERY]
            names = [wanted[x].tag or job_tag(self.instance_uid, *wanted[x].ref.split()) for x in part]
            out = self._ask(purpose, _id_variables(part, names))
            listed.update({strip_server(r.job_id): r for r in self.kind.parse_status(out)})
        return {k: v for k, v in listed.items() if k in wanted}

    def poll(self, runs: list[RunHandle]) -> dict[str, PollResult]:
        try:
            listed = self.query(runs)
        except CommandError as err:
            return {r.ref: PollResult(RunState.UNREACHABLE, detail=str(err)) for r in runs}
        out = {r.ref: self._judge(listed.get(strip_server(r.cluster_job_id or "")), r.job_dir) for r in runs}
        gone = [r for r in runs if r.cluster_job_id and out[r.ref].state == RunState.UNKNOWN
                and strip_server(r.cluster_job_id) not in listed]
        if gone and "history" in self.commands:
            try:
                past = self.query(gone, "history")
            except CommandError:
                past = {}  # no accounting here: the sentinel and the events decide
            for r in gone:
                row = past.get(strip_server(r.cluster_job_id or ""))
                if row is not None:
                    out[r.ref] = self._judge(row, r.job_dir)
        return out

    def _judge(self, row: SchedulerStatus | None, job_dir: Path | None) -> PollResult:
        code = read_exit_code(job_dir) if job_dir else None
        if row is None:
            if code is not None:
                return PollResult(RunState.EXITED, exit_code=code, detail="gone from the queue")
            return PollResult(RunState.UNKNOWN, detail="not in the scheduler's queue; waiting for the worker's report")
        state_code = row.code.split()[0] if row.code.strip() else row.code  # sacct: "CANCELLED by 0"
        phase = self.kind.phase(state_code)
        status = state_code + (f" ({row.reason})" if row.reason and row.reason not in ("None", "(null)") else "")
        if phase is None:
            return PollResult(RunState.UNKNOWN, detail=f"unknown {self.kind.name} state code {row.code!r}",
                              scheduler_status=row.code, nodes=row.nodes)
        if phase == Phase.PENDING:
            return PollResult(RunState.PENDING, detail=status, scheduler_status=status, nodes=row.nodes)
        if phase == Phase.RUNNING:
            return PollResult(RunState.ALIVE, scheduler_status=status, nodes=row.nodes)
        if phase == Phase.DONE:  # Torque shows cancelled jobs as C too: only the sentinel tells
            return PollResult(RunState.EXITED, exit_code=code, scheduler_status=status, nodes=row.nodes)
        return PollResult(RunState.EXITED, exit_code=code, detail=f"the scheduler ended the job: {status}",
                          scheduler_status=status, ended_by_scheduler=True, nodes=row.nodes)

    def accounting(self, runs: list[RunHandle]) -> dict[str, dict]:
        """The scheduler's figures for ended runs, by cluster job id (only those it has).

        Raises:
            CommandError: no accounting command, or it failed. ValueError: an answer not understood.
        """
        if "accounting" not in self.commands:
            raise CommandError("accounting", "", None, "", "the lane has no accounting command")
        ids = sorted({strip_server(r.cluster_job_id) for r in runs if r.cluster_job_id})
        out: dict[str, dict] = {}
        for i in range(0, len(ids), IDS_PER_QUERY):
            part = ids[i:i + IDS_PER_QUERY]
            out.update(parse_sacct_usage(self._ask("accounting", _id_variables(part, []))))
        return out

    def kill(self, run: RunHandle) -> None:
        """Cancel and wait until the scheduler no longer runs it.

        Raises:
            CommandError: the cancel command failed, or the job still runs after a minute.
        """
        if not run.cluster_job_id:
            return
        self.runner.run("cancel", self._command("cancel", {"cluster_job_id": run.cluster_job_id}))
        job_id = strip_server(run.cluster_job_id)
        deadline = time.monotonic() + CANCEL_CONFIRM_S
        while time.monotonic() < deadline:
            row = self.query([run]).get(job_id)
            if row is None or self.kind.phase(row.code) not in (Phase.PENDING, Phase.RUNNING):
                return
            time.sleep(0.5)
        raise CommandError("cancel", self.commands["cancel"], None, "", f"job {run.cluster_job_id} still listed",
                           timed_out=True)
