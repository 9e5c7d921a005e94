"""Cluster lanes: jobs go to SLURM, PBS or SGE as rendered submission scripts.

One status query per lane per poll covers all its jobs. A job the scheduler no longer
lists is not assumed finished: the worker's events and the exit-code sentinel written
by the script decide, and a query that fails concludes nothing.
"""

from __future__ import annotations

import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import BuildError
from ..exitcode import EXIT_CODE_NAME, read_exit_code
from ..model import Job, Resources
from .base import Lane, Launched, PollResult, RunState
from .local import default_mpiexec
from .render import TEMPLATE_DIR, Raw, environment, render, shell_join
from .runner import CommandError, CommandRunner
from .schedulers import KINDS, Phase, SchedulerStatus, strip_server
from .siteconfig import ClusterLaneConfig

SCRIPT_NAME = "submit.sh"
CANCEL_CONFIRM_S = 60.0
# resource shapes every template must render for when a lane is loaded
SAMPLE_SHAPES = (Resources(cpus=1, gpus=0, ram_gb=2, mpi_ranks=1), Resources(cpus=8, gpus=4, ram_gb=64, mpi_ranks=4))


def job_tag(instance_uid: str, job: Job) -> str:
    """Scheduler job name: finds a job again if the submit command's answer was lost."""
    return f"cryohpc_{instance_uid}_{job.project_uid}_{job.uid}"


class ClusterLane(Lane):
    self_scheduling = True  # the batch scheduler places jobs; no capacity kept here

    def __init__(self, cfg: ClusterLaneConfig, instance_uid: str = "dev", template_dirs: list[Path] | None = None):
        self.cfg, self.name, self.instance_uid = cfg, cfg.name, instance_uid
        self.poll_interval_s = cfg.poll_interval_s
        self.kind = KINDS[cfg.kind]
        dirs = list(template_dirs or [])
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

    def _launcher(self, ranks: int) -> list[str]:
        if ranks <= 1:
            return []
        if self.cfg.mpi_launcher:
            return [*shlex.split(self.cfg.mpi_launcher), "-n", str(ranks)]
        return [default_mpiexec() or "mpiexec", "-n", str(ranks)]

    def variables(self, job: Job, job_dir: Path, project_dir: Path, res: Resources,
                  custom: dict[str, Any]) -> dict[str, Any]:
        worker = self.worker_command(job_dir, res.mpi_ranks)
        launcher = self._launcher(res.mpi_ranks)
        w = self.cfg.worker
        return {
            **custom,
            "script_path_abs": str(job_dir / SCRIPT_NAME),
            "run_cmd": shell_join([*launcher, *worker]),
            "run_args": shell_join(worker[1:]),
            "worker_bin_path": worker[0],
            "num_cpu": res.cpus, "num_gpu": res.gpus, "ram_gb": int(math.ceil(res.ram_gb)),
            "num_nodes": 1, "num_mpi_ranks": res.mpi_ranks, "mpi_launcher": Raw(shlex.join(launcher)),
            "job_dir_abs": str(job_dir), "project_dir_abs": str(project_dir),
            "job_log_path_abs": str(job_dir / "job.log"), "exit_code_path": str(job_dir / EXIT_CODE_NAME),
            "project_uid": job.project_uid, "job_uid": job.uid, "job_type": job.type,
            "job_creator": job.created_by or "unknown", "job_title": job.title,
            "job_name": job_tag(self.instance_uid, job), "instance_uid": self.instance_uid,
            "cache_path": Raw(w.cache_path or ""), "cache_quota_mb": w.cache_quota_mb or 0,
            "cache_reserve_mb": w.cache_reserve_mb, "lane_name": self.name,
        }

    def _command(self, purpose: str, variables: dict[str, Any]) -> str:
        return render(self.env, f"{self.where} {purpose}_cmd", variables, source=self.commands[purpose])

    def render_script(self, variables: dict[str, Any]) -> str:
        return render(self.env, f"{self.where} template {self.template_name}", variables, name=self.template_name)

    def validate(self) -> None:
        """Render the script and every command for sample jobs of each resource shape.

        Raises:
            ConfigError: naming the lane, the file or key, the line and the problem.
        """
        job = Job(uid="J0", project_uid="P0", type="homo_reconstruct", job_dir="J0", created_by="validator")
        custom = {v.name: v.default if v.default is not None else {"int": 1, "float": 1.0, "bool": True,
                                                                    "enum": (v.choices or [""])[0]}.get(v.type, "x")
                  for v in self.cfg.custom_vars}
        custom.update(self.cfg.custom_values)
        for shape in SAMPLE_SHAPES:
            variables = self.variables(job, Path("/sample/P0/J0"), Path("/sample/P0"), shape, custom)
            self.render_script(variables)
            for purpose in self.commands:
                self._command(purpose, {**variables, "cluster_job_id": "12345"})
        if isinstance(self.cfg.send_cmd, str):
            render(self.env, f"{self.where} send_cmd", {"command": "squeue"}, source=self.cfg.send_cmd)

    # -- Lane interface -----------------------------------------------------------------
    def cache_settings(self, target: str = "") -> dict | None:
        return self.cfg.worker.cache_settings()

    def capacity(self) -> Resources:
        big = 10**6
        return Resources(cpus=big, gpus=big, ram_gb=float(big), mpi_ranks=big)

    def prepare(self, job: Job, job_dir: Path, project_dir: Path, custom: dict[str, Any]) -> tuple[str, dict]:
        res = job.resources_allocated or job.resources_needed
        variables = self.variables(job, job_dir, project_dir, res, custom)
        return self.render_script(variables), variables

    def launch(self, job: Job, job_dir: Path, command: list[str], env: dict[str, str], *, target: str = "",
               project_dir: Path | None = None, custom: dict[str, Any] | None = None) -> Launched:
        script, variables = self.prepare(job, job_dir, project_dir or job_dir.parent, custom or {})
        (job_dir / EXIT_CODE_NAME).unlink(missing_ok=True)
        path = job_dir / SCRIPT_NAME
        path.write_text(script)
        path.chmod(0o755)
        existing = self.find(job)
        if existing:  # an earlier submit went through but its answer was lost
            return Launched(cluster_job_id=existing, script=script)
        out = self.runner.run("submit", self._command("submit", variables), cwd=job_dir)
        try:
            job_id = self.kind.parse_submit(out)
        except ValueError as err:
            raise CommandError("submit", self.commands["submit"], 0, out, str(err)) from err
        return Launched(cluster_job_id=job_id, script=script)

    def find(self, job: Job) -> str | None:
        """A live scheduler job carrying this job's tag, if any (SLURM matches by name)."""
        if self.kind.name != "slurm" and not self.cfg.find_cmd:
            return None
        try:
            out = self.runner.run("find", self._command("find", {"job_name": job_tag(self.instance_uid, job)}))
        except CommandError:
            return None
        for row in self.kind.parse_status(out):
            if self.kind.phase(row.code) in (Phase.PENDING, Phase.RUNNING):
                return row.job_id
        return None

    def query(self) -> dict[str, SchedulerStatus]:
        """Every job the scheduler lists, in one command.

        Raises:
            CommandError: the scheduler did not answer.
        """
        rows = self.kind.parse_status(self.runner.run("status", self._command("status", {})))
        return {strip_server(r.job_id): r for r in rows}

    def poll(self, jobs: list[Job], job_dirs: dict[str, Path] | None = None) -> dict[str, PollResult]:
        try:
            listed = self.query()
        except CommandError as err:
            return {j.ref: PollResult(RunState.UNREACHABLE, detail=str(err)) for j in jobs}
        out = {}
        for job in jobs:
            row = listed.get(strip_server(job.cluster_job_id or ""))
            job_dir = (job_dirs or {}).get(job.ref, Path("/nonexistent"))
            out[job.ref] = self._judge(row, job_dir)
        return out

    def _judge(self, row: SchedulerStatus | None, job_dir: Path) -> PollResult:
        code = read_exit_code(job_dir)
        if row is None:
            if code is not None:
                return PollResult(RunState.EXITED, exit_code=code, detail="gone from the queue")
            return PollResult(RunState.UNKNOWN, detail="not in the scheduler's queue; waiting for the worker's report")
        phase = self.kind.phase(row.code)
        status = row.code + (f" ({row.reason})" if row.reason and row.reason not in ("None", "(null)") else "")
        if phase is None:
            return PollResult(RunState.UNKNOWN, detail=f"unknown {self.kind.name} state code {row.code!r}",
                              scheduler_status=row.code)
        if phase == Phase.PENDING:
            return PollResult(RunState.PENDING, detail=status, scheduler_status=status)
        if phase == Phase.RUNNING:
            return PollResult(RunState.ALIVE, scheduler_status=status)
        if phase == Phase.DONE:  # Torque shows cancelled jobs as C too: only the sentinel tells
            return PollResult(RunState.EXITED, exit_code=code, scheduler_status=status)
        return PollResult(RunState.EXITED, exit_code=code, detail=f"the scheduler ended the job: {status}",
                          scheduler_status=status)

    def kill(self, job: Job) -> None:
        """Cancel and wait until the scheduler no longer runs it.

        Raises:
            CommandError: the cancel command failed, or the job still runs after a minute.
        """
        if not job.cluster_job_id:
            return
        self.runner.run("cancel", self._command("cancel", {"cluster_job_id": job.cluster_job_id}))
        deadline = time.monotonic() + CANCEL_CONFIRM_S
        while time.monotonic() < deadline:
            row = self.query().get(strip_server(job.cluster_job_id))
            if row is None or self.kind.phase(row.code) not in (Phase.PENDING, Phase.RUNNING):
                return
            time.sleep(0.5)
        raise CommandError("cancel", self.commands["cancel"], None, "", f"job {job.cluster_job_id} still listed",
                           timed_out=True)

    def test(self) -> list[str]:
        """Run the info command and, for SLURM, ``sbatch --test-only`` on a sample script."""
        report = [f"info: {self.runner.run('info', self._command('info', {})).strip()[:2000]}"]
        if self.kind.test:
            import tempfile

            job = Job(uid="J0", project_uid="P0", type="homo_reconstruct", job_dir="J0", created_by="lane-test")
            with tempfile.TemporaryDirectory() as tmp:
                variables = self.variables(job, Path(tmp), Path(tmp), SAMPLE_SHAPES[0],
                                           self.custom_values({}, {}))
                (Path(tmp) / SCRIPT_NAME).write_text(self.render_script(variables))
                out = self.runner.run("test", render(self.env, f"{self.where} test", variables,
                                                     source=self.kind.test) + " 2>&1")
                report.append(f"test-only: {out.strip()}")
        return report
